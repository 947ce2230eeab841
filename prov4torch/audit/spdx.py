"""SPDX 3.0.1 JSON-LD with the AI and Dataset profiles, built with ``spdx-python-model`` from any PROV-JSON
prov4torch reads.

* each model an ``ai_AIPackage``: its file digest (and weights digest) as ``verifiedUsing`` hashes, the
  hyperparameters of the run that made it (``ai_hyperparameter``), the energy of that run
  (``ai_energyConsumption``: training, or fine-tuning when the run started from a base model), its intended use,
  when it was built;
* each dataset a ``dataset_DatasetPackage``: its content digest, size, personal data
  (``dataset_hasSensitivePersonalInformation``), consent scope as its intended use, consent expiry as
  ``validUntilTime``, its licence as a ``simplelicensing_LicenseExpression`` (``hasDeclaredLicense``);
* relationships: a model ``trainedOn`` its training data, ``testedOn`` data its run evaluated, ``descendantOf`` its
  base model; governance tags without an SPDX property are ``Annotation``s (``prov4torch:<tag>=<value>``).

The document is checked against the official SPDX 3.0.1 JSON schema (kept in ``audit/schemas``) before it is
written.
"""

from __future__ import annotations

import datetime as _dt
import json
import uuid
from functools import cache
from importlib import resources
from typing import Any

from .._version import __version__
from ..errors import ConfigError, MissingExtraError
from ..provjson import MLS_NAMESPACE, PARAM_NAMESPACE
from .fields import first, licence_expression, role_name, values
from .graph import PROV, Graph, Node

ANNOTATED = ("originCountry", "jurisdiction", "regulation", "prohibitedPurpose", "transferBasis", "datasetId",
             "purposeLimit", "sourceDataset", "identity", "tagConflict", "lineageGap")
TRAINING = {"training", "input", "fine-tuning"}
EVALUATION = {"evaluation", "validation", "testing"}


def _time(text: str | None) -> _dt.datetime | None:
    try:
        t = _dt.datetime.fromisoformat(str(text))
    except (TypeError, ValueError):
        return None
    return t if t.tzinfo else t.replace(tzinfo=_dt.UTC)


@cache
def schema() -> dict[str, Any]:
    """The official SPDX 3.0.1 JSON schema, as published."""
    data: dict[str, Any] = json.loads(resources.files("prov4torch.audit").joinpath(
        "schemas/spdx-3.0.1.json").read_text(encoding="utf-8"))
    return data


def short_circuit(node: Any) -> Any:
    """The schema with each ``{"type": "object", <more>}`` made ``{"type": "object", "if": {"type": "object"},
    "then": {<more>}}``: the same verdict (``then`` applies to the same instance, so its
    ``unevaluatedProperties`` sees the same annotations), but a string reference is refused by ``type`` at once
    instead of after evaluating an ``anyOf`` of ~80 class branches (jsonschema evaluates every keyword)."""
    if isinstance(node, dict):
        out = {k: short_circuit(v) for k, v in node.items()}
        if out.get("type") == "object" and ("anyOf" in out or "unevaluatedProperties" in out) and "if" not in out:
            return {"type": "object", "if": {"type": "object"}, "then": {k: v for k, v in out.items() if k != "type"}}
        return out
    if isinstance(node, list):
        return [short_circuit(v) for v in node]
    return node


@cache
def fast_schema() -> dict[str, Any]:
    out: dict[str, Any] = short_circuit(schema())
    return out


def validate(doc: dict[str, Any]) -> None:
    """``ConfigError`` naming the first problem if ``doc`` is not valid SPDX 3.0.1 JSON-LD."""
    try:
        import jsonschema
    except ImportError as exc:
        raise MissingExtraError("the spdx export checks its output with jsonschema: pip install "
                                "'prov4torch[export]'") from exc
    root = fast_schema()
    # The schema checks each @graph item against an anyOf of all ~100 classes, in which only the branch of the
    # item's own ``type`` can pass (every other branch is ``const "Not a X"``): checked against that branch
    # directly, with the same ``unevaluatedProperties``, the verdict is the same and 20 ms an element becomes
    # well under one (a 45,000-element document: 400 s and 20 GB before).
    problems = [(["top"], e.message) for e in jsonschema.Draft202012Validator(root).iter_errors(
        {**doc, "@graph": doc.get("@graph", [])[:1]})]
    validators: dict[str, Any] = {}
    for i, item in enumerate(doc.get("@graph", [])):
        kind = item.get("type") if isinstance(item, dict) else None
        if not isinstance(kind, str) or kind not in root["$defs"]:
            problems.append(([f"@graph/{i}"], f"unknown type {kind!r}"))
            continue
        if kind not in validators:
            validators[kind] = jsonschema.Draft202012Validator(  # the schema has no $id: refs are to its $defs
                {"type": "object", "$ref": f"#/$defs/{kind}", "unevaluatedProperties": False, "$defs": root["$defs"]})
        error = jsonschema.exceptions.best_match(validators[kind].iter_errors(item))
        if error is not None:
            problems.append(([f"@graph/{i}", *map(str, error.path)], error.message))
    if problems:
        where, message = problems[0]
        raise ConfigError(f"the SPDX document is not valid SPDX 3.0.1 ({len(problems)} problem(s)); first at "
                          f"{'/'.join(where)}: {message[:300]}")


class Builder:
    """One SPDX object set from one graph."""

    def __init__(self, graph: Graph) -> None:
        try:
            from spdx_python_model import v3_0_1 as spdx
        except ImportError as exc:
            raise MissingExtraError("the spdx export needs spdx-python-model: pip install 'prov4torch[export]'") \
                from exc
        self.s = spdx
        self.graph = graph
        self.objects = spdx.SHACLObjectSet()
        self.base = f"https://w3id.org/prov4torch/spdx/{uuid.uuid4()}"
        self.n = 0
        self.ci = spdx.CreationInfo(specVersion="3.0.1", created=_dt.datetime.now(_dt.UTC).replace(microsecond=0))
        agent = self.add(spdx.SoftwareAgent(spdxId=f"{self.base}#prov4torch", name=f"prov4torch {__version__}",
                                            creationInfo=self.ci))
        self.ci.createdBy.append(agent)
        self.elements: dict[str, Any] = {}
        self.roles: dict[tuple[str, str], set[str]] = {}  # (activity, entity) -> roles of the use
        for e in graph.edges:
            if e.relation == "used":
                roles = self.roles.setdefault((e.down, e.up), set())
                roles.update(role_name(r) for r in e.attrs.get(PROV + "role", []))

    def add(self, obj: Any) -> Any:
        self.objects.add(obj)
        return obj

    def next_id(self, kind: str) -> str:
        self.n += 1
        return f"{self.base}#{kind}-{self.n}"

    def relate(self, a: Any, kind: str, targets: list[Any]) -> None:
        if targets:
            self.add(self.s.Relationship(spdxId=self.next_id("relationship"), creationInfo=self.ci, from_=a,
                                         relationshipType=getattr(self.s.RelationshipType, kind), to=targets))

    def annotate(self, element: Any, node: Node) -> None:
        for local in ANNOTATED:
            for v in values(node, local):
                self.add(self.s.Annotation(spdxId=self.next_id("annotation"), creationInfo=self.ci,
                                           annotationType=self.s.AnnotationType.other, subject=element,
                                           statement=f"prov4torch:{local}={v}"))

    def hashes(self, element: Any, node: Node) -> None:
        for local in ("sha256", "weightsSha256"):
            digest = first(node, local)
            if digest and len(digest) == 64:
                h = self.s.Hash(algorithm=self.s.HashAlgorithm.sha256, hashValue=digest)
                if local == "weightsSha256":
                    h.comment = "sha256 of the weights (prov4torch weights digest), not of the file"
                element.verifiedUsing.append(h)

    def licence(self, element: Any, node: Node) -> None:
        expression = licence_expression(values(node, "license"))
        if expression:
            lic = self.add(self.s.simplelicensing_LicenseExpression(
                spdxId=self.next_id("license"), creationInfo=self.ci, simplelicensing_licenseExpression=expression))
            self.relate(element, "hasDeclaredLicense", [lic])

    def dataset(self, node: Node) -> Any:
        s = self.s
        d = self.add(s.dataset_DatasetPackage(spdxId=node.id, creationInfo=self.ci,
                                              name=self.graph.name(node) or self.graph.short(node.id)))
        d.software_primaryPurpose = s.software_SoftwarePurpose.data
        d.dataset_datasetType.append(s.dataset_DatasetType.other)
        self.hashes(d, node)
        size = first(node, "sizeBytes")
        if size and size.isdigit():
            d.dataset_datasetSize = int(size)
        personal = {v.lower() for v in values(node, "personalData")}
        d.dataset_hasSensitivePersonalInformation = (
            s.PresenceType.yes if "true" in personal else s.PresenceType.no if "false" in personal
            else s.PresenceType.noAssertion)
        scope = values(node, "consentScope")
        if scope:
            d.dataset_intendedUse = "consented purposes: " + ", ".join(sorted(set(scope)))
        expiry = [t for t in map(_time, values(node, "consentExpires")) if t is not None]
        if expiry:
            d.validUntilTime = min(expiry)
        self.licence(d, node)
        self.annotate(d, node)
        return d

    def model(self, node: Node) -> Any:
        s, g = self.s, self.graph
        m = self.add(s.ai_AIPackage(spdxId=node.id, creationInfo=self.ci, name=g.name(node) or g.short(node.id)))
        m.software_primaryPurpose = s.software_SoftwarePurpose.model
        self.hashes(m, node)
        version = first(node, "version")
        if version:
            m.software_packageVersion = version
        uses = values(node, "intendedUse")
        if uses:
            m.software_additionalPurpose.append(s.software_SoftwarePurpose.other)
            m.description = "intended use: " + ", ".join(sorted(set(uses)))
        self.licence(m, node)
        self.annotate(m, node)
        return m

    def made_by(self, m: Any, node: Node) -> None:
        """The run(s) that made a model: when, with what settings and energy, from which data."""
        s, g = self.s, self.graph
        trained, tested, bases = [], [], []
        for act_id in g.up["wasGeneratedBy"].get(node.id, ()):
            act = g.nodes.get(act_id)
            if act is None:
                continue
            built = _time(next(iter(act.values(PROV + "endTime")), None))
            if built:
                m.builtTime = built
            fine_tune = False
            for ent in g.up["used"].get(act_id, ()):
                target = g.nodes.get(ent)
                roles = self.roles.get((act_id, ent), set())
                if target is None:
                    continue
                if MLS_NAMESPACE + "HyperParameterSetting" in target.types():
                    for attr, vals in target.attrs.items():
                        if attr.startswith(PARAM_NAMESPACE):
                            m.ai_hyperparameter.append(s.DictionaryEntry(
                                key=attr[len(PARAM_NAMESPACE):], value=", ".join(map(str, vals))[:1000]))
                elif ent in self.elements and MLS_NAMESPACE + "Model" in target.types():
                    bases.append(self.elements[ent])
                    fine_tune = True
                elif ent in self.elements and roles & EVALUATION and not roles & TRAINING:
                    tested.append(self.elements[ent])
            self.energy(m, act, fine_tune)
        for d in g.up["wasDerivedFrom"].get(node.id, ()):
            if d in self.elements and MLS_NAMESPACE + "Dataset" in g.nodes[d].types():
                trained.append(self.elements[d])
        self.relate(m, "trainedOn", sorted(trained, key=lambda e: str(e.spdxId)))
        self.relate(m, "testedOn", sorted(tested, key=lambda e: str(e.spdxId)))
        self.relate(m, "descendantOf", sorted(bases, key=lambda e: str(e.spdxId)))

    def energy(self, m: Any, act: Node, fine_tune: bool) -> None:
        s = self.s
        try:
            kwh = float(first(act, "energyKWh") or "")
        except ValueError:
            return
        if m.ai_energyConsumption is None:
            m.ai_energyConsumption = s.ai_EnergyConsumption()
        item = s.ai_EnergyConsumptionDescription(ai_energyQuantity=kwh, ai_energyUnit=s.ai_EnergyUnitType.kilowattHour)
        (m.ai_energyConsumption.ai_finetuningEnergyConsumption if fine_tune
         else m.ai_energyConsumption.ai_trainingEnergyConsumption).append(item)

    def document(self) -> dict[str, Any]:
        g = self.graph
        datasets = g.of_type([MLS_NAMESPACE + "Dataset"])
        models = g.of_type([MLS_NAMESPACE + "Model"])
        for ds in datasets:
            self.elements[ds.id] = self.dataset(ds)
        for node in models:
            self.elements[node.id] = self.model(node)
        for node in models:
            self.made_by(self.elements[node.id], node)
        doc = self.add(self.s.SpdxDocument(spdxId=f"{self.base}#document", creationInfo=self.ci,
                                           name="prov4torch training provenance"))
        for node in models or datasets:
            doc.rootElement.append(self.elements[node.id])
        # ``element`` (optional) is not written: the @graph holds every element, and listing them again made a
        # 45,000-element document's one SpdxDocument take most of the validation time
        doc.profileConformance.extend([self.s.ProfileIdentifierType.core, self.s.ProfileIdentifierType.software,
                                       self.s.ProfileIdentifierType.ai, self.s.ProfileIdentifierType.dataset])
        out: dict[str, Any] = self.s.JSONLDSerializer().serialize_data(self.objects)
        for obj in out.get("@graph", []):
            _fixed_decimals(obj)
        return out


def _fixed_decimals(obj: Any) -> None:
    """spdx-python-model writes a decimal as Python's repr (``2.98e-05``), which the official schema's decimal
    pattern refuses: written in fixed notation, the same number."""
    from decimal import Decimal

    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "ai_energyQuantity" and isinstance(v, str) and "e" in v.lower():
                obj[k] = format(Decimal(v), "f")
            else:
                _fixed_decimals(v)
    elif isinstance(obj, list):
        for v in obj:
            _fixed_decimals(v)


def spdx3(graph: Graph) -> dict[str, Any]:
    """The SPDX 3.0.1 document of a graph, validated (``ConfigError`` if it is not valid)."""
    doc = Builder(graph).document()
    validate(doc)
    return doc
