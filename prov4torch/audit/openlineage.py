"""OpenLineage run events from any PROV-JSON prov4torch reads: per run, a START and its terminal event
(COMPLETE for a finished run; FAIL for a failed or blocked one, with an ``errorMessage`` facet; ABORT for a
killed or incomplete one), the datasets it used as inputs and the checkpoints it saved as outputs.

Names: namespace ``prov4torch``; a job is ``<experiment>.<run name>``; a dataset or model is its content id
(``dataset/sha256-...``, ``model/weights-sha256-...``) with its digest as the ``version`` facet. prov4torch's
governance rides along in two custom facets whose JSON schemas are published with the package
(``schemas/openlineage/Prov4torch*.json``, and in docs/openlineage.md): ``prov4torch_governance`` on datasets
and models (roles, tags, lineage flags) and ``prov4torch_run`` on runs (status, region, purpose, policy
decisions, energy, the PROV document it came from). Every event is checked against the OpenLineage 2-0-2 spec
and the facets' schemas (kept in ``schemas/openlineage``) before it is written or sent.
"""

from __future__ import annotations

import datetime as _dt
import json
import uuid
from collections.abc import Iterable
from functools import cache
from importlib import resources
from typing import Any

from .._version import __version__
from ..errors import ConfigError, MissingExtraError
from ..provjson import MLS_NAMESPACE, NAMESPACE
from .fields import role_name
from .graph import PROV, Graph, Node
from .query import kind_of

NS = "prov4torch"
PRODUCER = f"https://w3id.org/prov4torch/{__version__}"
SPEC = "https://openlineage.io/spec/2-0-2/OpenLineage.json"
FACET_BASE = "https://w3id.org/prov4torch/openlineage/1-0-0"
FACETS = {  # facet name -> (schema file, $defs name)
    "version": ("DatasetVersionDatasetFacet.json", "DatasetVersionDatasetFacet"),
    "jobType": ("JobTypeJobFacet.json", "JobTypeJobFacet"),
    "processing_engine": ("ProcessingEngineRunFacet.json", "ProcessingEngineRunFacet"),
    "errorMessage": ("ErrorMessageRunFacet.json", "ErrorMessageRunFacet"),
    "prov4torch_governance": ("Prov4torchGovernanceFacet.json", "Prov4torchGovernanceFacet"),
    "prov4torch_run": ("Prov4torchRunFacet.json", "Prov4torchRunFacet"),
}
TERMINAL = {"FINISHED": "COMPLETE", "FAILED": "FAIL", "BLOCKED": "FAIL", "KILLED": "ABORT", "INCOMPLETE": "ABORT"}
GOVERNANCE = ("datasetId", "originCountry", "jurisdiction", "regulation", "personalData", "consentScope",
              "consentExpires", "prohibitedPurpose", "purposeLimit", "license", "transferBasis", "intendedUse",
              "identity", "lineageGap", "tagConflict", "lineageConflict", "lineageError", "lineageSource")
LISTS = {"consentScope", "prohibitedPurpose", "purposeLimit", "lineageConflict", "lineageError"}


def _schema_url(facet: str) -> str:
    name = FACETS[facet][0]
    if name.startswith("Prov4torch"):
        return f"{FACET_BASE}/{name}#/$defs/{FACETS[facet][1]}"
    return f"{_schemas()[name]['$id']}#/$defs/{FACETS[facet][1]}"


def facet(name: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"_producer": PRODUCER, "_schemaURL": _schema_url(name), **body}


@cache
def _schemas() -> dict[str, dict[str, Any]]:
    folder = resources.files("prov4torch.audit").joinpath("schemas/openlineage")
    return {p.name: json.loads(p.read_text(encoding="utf-8")) for p in folder.iterdir() if p.name.endswith(".json")}


def validate(event: dict[str, Any]) -> None:
    """``ConfigError`` naming the first problem if ``event`` is not a valid OpenLineage 2-0-2 RunEvent or one of
    its facets does not match its schema."""
    try:
        import jsonschema
    except ImportError as exc:
        raise MissingExtraError("the openlineage export checks its events with jsonschema: pip install "
                                "'prov4torch[export]'") from exc
    schemas = _schemas()
    checks = [(f"{SPEC}#/$defs/RunEvent", event, "event")]
    for where, facets in _facets_of(event):
        for name, body in facets.items():
            if name in FACETS:
                file, defs = FACETS[name]
                checks.append((f"{schemas[file]['$id']}#/$defs/{defs}", body, f"{where} facet {name}"))
    for ref, value, where in checks:
        error = jsonschema.exceptions.best_match(_validator(ref).iter_errors(value))
        if error is not None:
            raise ConfigError(f"an OpenLineage {where} is not valid: {'/'.join(map(str, error.path)) or 'top'}: "
                              f"{error.message[:300]}")


@cache
def _validator(ref: str) -> Any:
    """One validator per schema reference, over a registry of the schemas kept here (made once)."""
    import jsonschema
    from referencing import Registry, Resource

    registry: Registry[Any] = Registry().with_resources(
        (s["$id"], Resource.from_contents(s)) for s in _schemas().values())
    return jsonschema.Draft202012Validator({"$ref": ref}, registry=registry,
                                           format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def _facets_of(event: dict[str, Any]) -> Iterable[tuple[str, dict[str, Any]]]:
    yield "run", event.get("run", {}).get("facets", {})
    yield "job", event.get("job", {}).get("facets", {})
    for kind in ("inputs", "outputs"):
        for d in event.get(kind, []):
            yield f"{kind[:-1]} {d.get('name')}", d.get("facets", {})


# -- building ---------------------------------------------------------------------------------------------------

def run_uuid(run_id: str) -> str:
    """A run's id when it is a UUID (prov4torch's are), else a UUID derived from it (other tools' ids)."""
    try:
        return str(uuid.UUID(run_id))
    except ValueError:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"prov4torch:run:{run_id}"))


def _time(text: Any) -> str:
    try:
        t = _dt.datetime.fromisoformat(str(text))
    except (TypeError, ValueError):
        t = _dt.datetime.now(_dt.UTC)
    return (t if t.tzinfo else t.replace(tzinfo=_dt.UTC)).isoformat()


def _values(node: Node, local: str) -> list[Any]:
    return node.values(NAMESPACE + local)


def _scalar(node: Node, local: str) -> Any:
    vals = _values(node, local)
    return vals[0] if vals else None


def governance(node: Node, roles: Iterable[str] = ()) -> dict[str, Any]:
    body: dict[str, Any] = {"kind": kind_of(node)}
    for local in GOVERNANCE:
        vals = _values(node, local)
        if not vals:
            continue
        if local in LISTS:
            body[local] = sorted({str(v) for v in vals})
        elif local in ("personalData", "lineageGap", "tagConflict"):
            body[local] = str(vals[0]).lower() == "true"
        else:
            body[local] = str(vals[0])
    if roles:
        body["roles"] = sorted(set(roles))
    return facet("prov4torch_governance", body)


def dataset_ref(graph: Graph, node: Node, roles: Iterable[str] = ()) -> dict[str, Any]:
    short = graph.short(node.id)
    name = short.split(":", 1)[1] if short.startswith("p4t:") else short
    facets: dict[str, Any] = {"prov4torch_governance": governance(node, roles)}
    digest = _scalar(node, "sha256") or _scalar(node, "weightsSha256")
    if digest:
        facets["version"] = facet("version", {"datasetVersion": f"sha256:{digest}"})
    return {"namespace": NS, "name": name, "facets": facets}


def job(experiment: str, name: str) -> dict[str, Any]:
    return {"namespace": NS, "name": f"{experiment or 'default'}.{name or 'run'}", "facets": {
        "jobType": facet("jobType", {"processingType": "BATCH", "integration": "PYTORCH", "jobType": "TRAINING"})}}


def start_event(run_id: str, experiment: str, name: str, start: Any, torch_version: str = "",
                inputs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"eventType": "START", "eventTime": _time(start), "producer": PRODUCER,
            "schemaURL": f"{SPEC}#/$defs/RunEvent",
            "run": {"runId": run_uuid(run_id), "facets": {"processing_engine": facet("processing_engine", {
                "name": "pytorch", "version": torch_version or "unknown", "openlineageAdapterVersion": __version__})}},
            "job": job(experiment, name), "inputs": inputs or [], "outputs": []}


class Events:
    """The events of the runs in one graph."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.used: dict[str, list[tuple[str, set[str]]]] = {}
        self.generated: dict[str, list[str]] = {}
        self.informed: dict[str, list[str]] = {}
        for e in graph.edges:
            if e.relation == "used":
                roles = {role_name(r) for r in e.attrs.get(PROV + "role", [])}
                self.used.setdefault(e.down, []).append((e.up, roles))
            elif e.relation == "wasGeneratedBy":
                self.generated.setdefault(e.up, []).append(e.down)
            elif e.relation == "wasInformedBy":
                self.informed.setdefault(e.up, []).append(e.down)

    def all(self) -> list[dict[str, Any]]:
        by_run: dict[str, list[Node]] = {}
        for act in self.graph.of_type([MLS_NAMESPACE + "Run"]):
            rid = str(_scalar(act, "runId") or self.graph.short(act.id))
            by_run.setdefault(rid, []).append(act)
        out = []
        for rid, acts in sorted(by_run.items()):
            out += self.of_run(rid, acts)
        return out

    def of_run(self, rid: str, acts: list[Node]) -> list[dict[str, Any]]:
        g = self.graph
        first = acts[0]
        inputs: dict[str, tuple[Node, set[str]]] = {}
        outputs: dict[str, Node] = {}
        for act in acts:
            for ent, roles in self.used.get(act.id, []):
                node = g.nodes.get(ent)
                if node is not None and kind_of(node) in ("dataset", "model"):
                    inputs.setdefault(ent, (node, set()))[1].update(roles)
            for ent in self.generated.get(act.id, []):
                node = g.nodes.get(ent)
                if node is not None and kind_of(node) == "model":
                    outputs[ent] = node
        ins = [dataset_ref(g, n, r) for n, r in inputs.values()]
        experiment, name = str(_scalar(first, "experiment") or ""), str(_scalar(first, "runName") or "")
        starts = sorted(str(v) for a in acts for v in a.values(PROV + "startTime"))
        start = start_event(rid, experiment, name, starts[0] if starts else None,
                            torch_version=self._torch(acts), inputs=ins)
        statuses = {str(_scalar(a, "status") or "") for a in acts}
        status = next((s for s in ("BLOCKED", "FAILED", "KILLED", "INCOMPLETE") if s in statuses), "FINISHED")
        ends = sorted(str(v) for a in acts for v in a.values(PROV + "endTime"))
        end = {**start, "eventType": TERMINAL[status], "eventTime": _time(ends[-1] if ends else None),
               "inputs": ins, "outputs": [dataset_ref(g, n) for n in outputs.values()],
               "run": {"runId": start["run"]["runId"], "facets": {
                   **start["run"]["facets"], "prov4torch_run": self._run_facet(rid, acts, status)}}}
        if status in ("FAILED", "BLOCKED"):
            message = str(_scalar(first, "exceptionMessage") or f"the run ended {status}")
            end["run"]["facets"]["errorMessage"] = facet("errorMessage", {
                "message": message[:4000], "programmingLanguage": "PYTHON"})
        return [start, end]

    def _torch(self, acts: list[Node]) -> str:
        for act in acts:
            for ent, _roles in self.used.get(act.id, []):
                node = self.graph.nodes.get(ent)
                if node is not None and _scalar(node, "torchVersion"):
                    return str(_scalar(node, "torchVersion"))
        return ""

    def _run_facet(self, rid: str, acts: list[Node], status: str) -> dict[str, Any]:
        first = acts[0]
        body: dict[str, Any] = {"runId": rid, "status": status, "ranks": len(acts),
                                "documents": sorted({s for a in acts for s in a.sources})}
        for local in ("computeRegion", "purpose", "intendedUse", "policyMode", "energyCountry", "energyMethod"):
            if _scalar(first, local) is not None:
                body[local] = str(_scalar(first, local))
        for local in ("energyKWh", "emissionsKgCO2eq"):
            try:
                body[local] = sum(float(_scalar(a, local)) for a in acts if _scalar(a, local) is not None)
            except (TypeError, ValueError):
                continue
        decisions = []
        for act in acts:
            for check in self.informed.get(act.id, []):
                for ent in self.generated.get(check, []):
                    node = self.graph.nodes.get(ent)
                    if node is not None and NAMESPACE + "PolicyDecision" in node.types():
                        decisions.append({k: str(_scalar(node, k)) for k in ("verdict", "rule", "reason", "mode")
                                          if _scalar(node, k) is not None})
        if decisions:
            body["decisions"] = decisions[:1000]
        return facet("prov4torch_run", body)


def events(graph: Graph) -> list[dict[str, Any]]:
    """Every run's events, each validated."""
    out = Events(graph).all()
    for e in out:
        validate(e)
    return out
