"""Hand-over formats from any PROV-JSON prov4torch reads (a run, a merged job, an output root).

* ``cyclonedx``: a CycloneDX 1.6 ML-BOM built with ``cyclonedx-python-lib``: each model a
  ``machine-learning-model`` component (file and weights digests, its inherited governance as namespaced
  properties, a ``modelCard`` naming its training datasets, intended use, and the energy and CO2 of the runs that
  made it under ``considerations.environmentalConsiderations``); each dataset a ``data`` component (its digest,
  licence as an SPDX expression, governance tags and roles as properties); a model depends on its datasets.
  Checked by the library's strict JSON-schema validator before it is written.
* ``prov-o``: the same PROV as RDF (PROV-O) through the ``prov`` package and ``rdflib``: TriG (named graphs hold
  the bundles of a merged job), Turtle (one graph: bundles flattened) or JSON-LD; each parses back to the same
  quads (Turtle: the same triples). Every qualified relation (``prov:qualifiedUsage`` with its role and time, ...)
  is asserted in its unqualified form too (``prov:used``), as PROV-O's qualification pattern reads: a query for
  ``?run prov:used ?data`` or ``?model prov:wasDerivedFrom+ ?data`` finds every relation, qualified or not.

Writes are atomic (temporary file, then rename): a failed export leaves nothing behind.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .._version import __version__
from ..errors import ConfigError, MissingExtraError
from ..provjson import MLS_NAMESPACE
from ..safefs import check_output, open_regular, write_atomic
from .fields import first, licence_expression, role_name, values
from .graph import Graph, Node
from .jsonread import ProvInputError
from .load import add_file, expand_dirs, load_graph, no_cycle_collection

FORMATS = ("cyclonedx", "spdx", "openlineage", "prov-o", "prov-o-turtle", "prov-o-jsonld", "annex-iv")
PROPERTY_PREFIX = "prov4torch:"
GOVERNANCE = ("datasetId", "originCountry", "jurisdiction", "regulation", "personalData", "consentScope",
              "consentExpires", "prohibitedPurpose", "license", "transferBasis", "sourceDataset", "intendedUse",
              "identity", "lineageGap", "tagConflict")


def _properties(node: Node) -> list[Any]:
    from cyclonedx.model import Property

    return [Property(name=f"{PROPERTY_PREFIX}{local}", value=v) for local in GOVERNANCE for v in values(node, local)]


def _hashes(node: Node) -> list[Any]:
    from cyclonedx.model import HashAlgorithm, HashType

    digest = first(node, "sha256")
    return [HashType(alg=HashAlgorithm.SHA_256, content=digest)] if digest and len(digest) == 64 else []


def _licence(node: Node) -> list[Any]:
    from cyclonedx.model.license import LicenseExpression

    expression = licence_expression(values(node, "license"))
    return [LicenseExpression(expression)] if expression else []


def _roles_by_dataset(graph: Graph) -> dict[str, set[str]]:
    """dataset -> the roles it was used in (one pass over the edges)."""
    roles: dict[str, set[str]] = {}
    for e in graph.edges:
        if e.relation == "used":
            roles.setdefault(e.up, set()).update(role_name(r) for r in e.attrs.get(
                "http://www.w3.org/ns/prov#role", []))
    return roles


def cyclonedx(graph: Graph) -> dict[str, Any]:
    """The CycloneDX 1.6 ML-BOM of a graph, validated (``ConfigError`` if the library finds it invalid)."""
    try:
        from cyclonedx.model import Property
        from cyclonedx.model.bom import Bom
        from cyclonedx.model.component import Component, ComponentType
        from cyclonedx.output.json import JsonV1Dot6
        from cyclonedx.schema import SchemaVersion
        from cyclonedx.validation.json import JsonStrictValidator
    except ImportError as exc:
        raise MissingExtraError("the cyclonedx export needs cyclonedx-python-lib: pip install "
                                "'prov4torch[export]'") from exc
    bom = Bom()
    refs: dict[str, str] = {}
    datasets = graph.of_type([MLS_NAMESPACE + "Dataset"])
    models = graph.of_type([MLS_NAMESPACE + "Model"])
    roles = _roles_by_dataset(graph)
    for ds in datasets:
        ref = f"dataset:{graph.short(ds.id)}"
        refs[ds.id] = ref
        props = _properties(ds) + [Property(name=f"{PROPERTY_PREFIX}role", value=r)
                                   for r in sorted(roles.get(ds.id, ()))]
        bom.components.add(Component(name=graph.name(ds) or graph.short(ds.id), type=ComponentType.DATA,
                                     bom_ref=ref, hashes=_hashes(ds), licenses=_licence(ds), properties=props))
    for m in models:
        ref = f"model:{graph.short(m.id)}"
        refs[m.id] = ref
        props = _properties(m)
        weights = first(m, "weightsSha256")
        if weights:
            props.append(Property(name=f"{PROPERTY_PREFIX}weightsSha256", value=weights))
        bom.components.add(Component(name=graph.name(m) or graph.short(m.id), type=ComponentType.MACHINE_LEARNING_MODEL,
                                     bom_ref=ref, hashes=_hashes(m), properties=props))
    by_ref = {c.bom_ref.value: c for c in bom.components}
    for m in models:
        trained = [refs[d] for d in graph.up["wasDerivedFrom"].get(m.id, ()) if d in refs]
        if trained:
            bom.register_dependency(by_ref[refs[m.id]], [by_ref[r] for r in trained])
    bom.metadata.properties.add(Property(name=f"{PROPERTY_PREFIX}generator", value=f"prov4torch {__version__}"))
    doc: dict[str, Any] = json.loads(JsonV1Dot6(bom).output_as_string())
    cards = {refs[m.id]: _model_card(graph, m, refs) for m in models}
    for component in doc.get("components", []):
        card = cards.get(component.get("bom-ref"))
        if card:
            component["modelCard"] = card
    errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(doc))
    if errors is not None:
        raise ConfigError(f"the CycloneDX document is not valid: {str(errors)[:300]}")
    return doc


def _model_card(graph: Graph, model: Node, refs: dict[str, str]) -> dict[str, Any]:
    card: dict[str, Any] = {}
    trained = [refs[d] for d in graph.up["wasDerivedFrom"].get(model.id, ()) if d in refs and "dataset:" in refs[d]]
    if trained:
        card["modelParameters"] = {"datasets": [{"ref": r} for r in sorted(trained)]}
    considerations: dict[str, Any] = {}
    uses = values(model, "intendedUse")
    if uses:
        considerations["useCases"] = uses
    consumptions = []
    for act in (graph.nodes[a] for a in graph.up["wasGeneratedBy"].get(model.id, ()) if a in graph.nodes):
        kwh = _number(first(act, "energyKWh"))
        if kwh is None:
            continue
        grid = f"electricity grid ({first(act, 'energyCountry') or 'unknown'})"
        base = any(refs.get(u, "").startswith("model:") for u in graph.up["used"].get(act.id, ()))
        item: dict[str, Any] = {
            "activity": "fine-tuning" if base else "training",
            "energyProviders": [{"organization": {"name": grid}, "energySource": "unknown",
                                 "energyProvided": {"value": kwh, "unit": "kWh"}}],
            "activityEnergyCost": {"value": kwh, "unit": "kWh"},
        }
        kg = _number(first(act, "emissionsKgCO2eq"))
        if kg is not None:
            item["co2CostEquivalent"] = {"value": kg / 1000.0, "unit": "tCO2eq"}
        consumptions.append(item)
    if consumptions:
        considerations["environmentalConsiderations"] = {"energyConsumptions": consumptions}
    if considerations:
        card["considerations"] = considerations
    return card


def _number(v: str | None) -> float | None:
    try:
        return float(v) if v is not None else None
    except ValueError:
        return None


def prov_o(files: list[Path], fmt: str) -> str:
    """The documents as PROV-O: TriG (``prov-o``) or JSON-LD (``prov-o-jsonld``), one document at a time merged
    into one RDF dataset."""
    try:
        import rdflib
    except ImportError as exc:
        raise MissingExtraError("the prov-o export needs rdflib: pip install 'prov4torch[export]'") from exc
    from rdflib import term

    # rdflib's Turtle/TriG writer prints xsd:double as a "plain" literal with six significant digits
    # (f"{x:e}"): 337883136.0 came back as 337883100.0. Written with its lexical form and datatype instead, it
    # round-trips exactly; the change is undone at once (rdflib exposes no option for it).
    plain = term._PLAIN_LITERAL_TYPES
    term._PLAIN_LITERAL_TYPES = tuple(t for t in plain if t != term._XSD_DOUBLE)
    try:
        dataset = rdflib.Dataset()
        for f in files:
            doc = _prov_document(f)
            dataset.parse(data=doc.serialize(format="rdf", rdf_format="nquads"), format="nquads")
        _assert_unqualified(dataset, rdflib)
        if fmt == "prov-o-turtle":  # one graph: a merged job's bundles (named graphs) are flattened into it
            flat = rdflib.Graph()
            for prefix, ns in dataset.namespaces():
                flat.bind(prefix, ns)
            for s, p, o, _g in dataset.quads((None, None, None, None)):
                flat.add((s, p, o))
            return str(flat.serialize(format="turtle"))
        return str(dataset.serialize(format="trig" if fmt == "prov-o" else "json-ld"))
    finally:
        term._PLAIN_LITERAL_TYPES = plain


# PROV-O's qualification pattern: the property linking a subject to its qualified node, the node's property naming
# the influencer, and the unqualified property the pair stands for
QUALIFIED_FORMS = {
    "qualifiedUsage": ("entity", "used"),
    "qualifiedGeneration": ("activity", "wasGeneratedBy"),
    "qualifiedDerivation": ("entity", "wasDerivedFrom"),
    "qualifiedRevision": ("entity", "wasRevisionOf"),
    "qualifiedQuotation": ("entity", "wasQuotedFrom"),
    "qualifiedPrimarySource": ("entity", "hadPrimarySource"),
    "qualifiedAssociation": ("agent", "wasAssociatedWith"),
    "qualifiedAttribution": ("agent", "wasAttributedTo"),
    "qualifiedDelegation": ("agent", "actedOnBehalfOf"),
    "qualifiedCommunication": ("activity", "wasInformedBy"),
    "qualifiedStart": ("entity", "wasStartedBy"),
    "qualifiedEnd": ("entity", "wasEndedBy"),
    "qualifiedInvalidation": ("activity", "wasInvalidatedBy"),
    "qualifiedInfluence": ("influencer", "wasInfluencedBy"),
}


def _assert_unqualified(dataset: Any, rdflib: Any) -> None:
    """Add the unqualified triple of every qualified relation, in the graph that holds it. The ``prov`` package
    writes a relation that has a time, a role or an activity (most of ours) only in its qualified form; PROV-O
    qualifies an unqualified assertion, and an auditor's query for ``prov:used`` must not miss them."""
    prov = rdflib.Namespace("http://www.w3.org/ns/prov#")
    added = []
    for qualified, (influencer, unqualified) in QUALIFIED_FORMS.items():
        for subject, _p, node, graph in dataset.quads((None, prov[qualified], None, None)):
            for obj in dataset.graph(graph).objects(node, prov[influencer]):
                added.append((subject, prov[unqualified], obj, graph))
    dataset.addN(added)


def _prov_document(path: Path) -> Any:
    """A document as the prov library reads it, once our own reader took it (the same refusals as the other
    exports: a FIFO or device, bombs, malformed records -- each one line naming the file), read from a regular
    file only; a record the prov library would still drop (its warnings) is an error too, not a quiet loss."""
    from prov.model import ProvDocument

    with no_cycle_collection():
        add_file(Graph(), path)
    with open_regular(path) as fh:
        text = fh.read().decode("utf-8")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            return ProvDocument.deserialize(content=text, format="json")
        except Warning as exc:
            raise ProvInputError(f"{path}: cannot be converted to PROV-O without losing part of it: "
                                 f"{str(exc).splitlines()[0][:300]}", value=str(path)) from None


def export(paths: Iterable[str | Path], fmt: str, out: str | Path) -> Path:
    """Export PROV-JSON files (or run directories, an output root) as ``fmt``; atomically written to ``out``."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; known: {', '.join(FORMATS)}")
    if fmt == "annex-iv":  # a pack holds these exports: audit.pack builds it (the CLI calls it)
        raise ConfigError("annex-iv is a pack of these exports: build it with prov4torch.audit.pack.write_pack")
    target = check_output(Path(out))
    files = list(expand_dirs(paths))
    if fmt in ("cyclonedx", "spdx", "openlineage"):
        from .openlineage import events
        from .spdx import spdx3

        with no_cycle_collection():
            graph = load_graph(files)
            if fmt == "openlineage":  # JSON Lines: one event a line, as lineage servers and files take them
                text = "".join(json.dumps(e, sort_keys=True) + "\n" for e in events(graph))
            else:
                text = json.dumps(cyclonedx(graph) if fmt == "cyclonedx" else spdx3(graph), indent=1, sort_keys=True)
    else:
        text = prov_o(files, fmt)
    write_atomic(target, text)
    return target
