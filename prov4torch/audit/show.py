"""A readable summary of PROV-JSON files: runs, parameters, metrics, datasets, models, energy.

Works on any PROV-JSON (other tools' documents give counts, activities and entities);
prov4torch's own files give the full picture.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any

from ..provjson import MLS_NAMESPACE, NAMESPACE, PARAM_NAMESPACE
from .graph import PROV, TYPE, Graph, Node
from .load import expand_dirs, load_graph, no_cycle_collection
from .query import kind_of
from .text import clean, clean_tree

P = NAMESPACE
RUN_FIELDS = ("status", "runId", "rank", "worldSize", "host", "computeRegion", "purpose", "exitCode", "signal",
              "exceptionType", "exceptionMessage", "policyMode", "optimizerSteps")
ENERGY_FIELDS = ("energyKWh", "emissionsKgCO2eq", "energyCountry", "energyMethod", "energyFallbackReason",
                 "gpuUtilizationMean", "gpuUtilizationPeak", "gpuMemoryPeakBytes", "peakRssBytes")
GOVERNANCE = ("datasetId", "originCountry", "jurisdiction", "regulation", "personalData", "consentScope",
              "consentExpires", "prohibitedPurpose", "license", "transferBasis", "intendedUse")
ENV_FIELDS = ("python", "torchVersion", "cudaVersion", "hostname", "cpuModel", "cpuCount", "gpuCount", "gpuModel",
              "gpuDriver", "gitCommit", "gitBranch", "gitDirty")


def _one(node: Node, attr: str) -> Any:
    v = node.values(attr)
    if not v:
        return None
    return v[0] if len(v) == 1 else v


def _fields(node: Node, names: Iterable[str]) -> dict[str, Any]:
    return {n: _one(node, P + n) for n in names if node.values(P + n)}


def write_json(summary: Mapping[str, Any], out: IO[str]) -> None:
    """The summary as JSON: its sections on lines of their own, each row of a table on one line, written as it
    goes by the C encoder (an indenting ``json.dumps`` is pure Python: a large document's million rows took
    longer to print than to read, and became one string first)."""
    encode = json.JSONEncoder(default=str).encode
    out.write("{")
    for i, (key, value) in enumerate(summary.items()):
        out.write(f"{',' if i else ''}\n  {encode(key)}: ")
        if isinstance(value, list) and value:
            out.write("[")
            for j, row in enumerate(value):
                out.write(f"{',' if j else ''}\n    {encode(row)}")
            out.write("\n  ]")
        else:
            out.write(encode(value))
    out.write("\n}\n")


def summarize(paths: Iterable[str | Path]) -> dict[str, Any]:
    files = [str(p) for p in expand_dirs(paths)]
    with no_cycle_collection():
        graph = load_graph(files, edges=False)  # a summary walks no relation: counted, not kept
        return summarize_graph(graph, files)


def summarize_graph(graph: Graph, files: list[str]) -> dict[str, Any]:
    """The summary, every string from the documents cleaned of escape sequences and control characters (the
    metric rows, millions in a large document, as they are made; the rest after)."""
    return {k: v if k == "metrics" else clean_tree(v) for k, v in _summarize(graph, files).items()}


def _cleaned(v: Any) -> Any:
    """One attribute from a node's flat tuple as ``_one`` gives it (a tuple is several values; () none),
    cleaned."""
    if type(v) is str:
        return clean(v, 2000)
    if type(v) is tuple:
        return clean_tree(list(v)) if v else None
    return clean_tree(v)


METRIC_FIELDS = tuple((f, P + f) for f in ("name", "context", "count", "last", "min", "max"))
METRIC_SERIES = P + "MetricSeries"


def _owner(label: str) -> dict[str, Any]:
    """The run (rank, launcher) a series of ours belongs to: its id up to ``/metric/``."""
    cut = label.rfind("/metric/")
    return {"run": clean(label[:cut], 500) if cut > 0 else None}


def _summarize(graph: Graph, files: list[str]) -> dict[str, Any]:
    runs, params, metrics, datasets, models, envs, others = [], {}, [], [], [], [], []
    for node in sorted(graph.nodes.values(), key=lambda n: n.label):
        flat = node.flat
        given = dict(zip(flat[::2], flat[1::2], strict=True))
        if given.get(TYPE) == METRIC_SERIES:  # most nodes of a large document: one call less each
            metrics.append({f: _cleaned(given.get(iri)) for f, iri in METRIC_FIELDS} | _owner(node.label))
            continue
        types = node.types()
        if MLS_NAMESPACE + "Run" in types:
            start, end = _one(node, PROV + "startTime"), _one(node, PROV + "endTime")
            runs.append({"id": graph.short(node.id), "start": start, "end": end, **_fields(node, RUN_FIELDS),
                         **_fields(node, ENERGY_FIELDS)})
        elif MLS_NAMESPACE + "HyperParameterSetting" in types:
            for attr, values in node.attrs.items():
                if attr.startswith(PARAM_NAMESPACE):
                    params[attr[len(PARAM_NAMESPACE):]] = values[0] if len(values) == 1 else values
        elif METRIC_SERIES in types:
            metrics.append({f: _cleaned(given.get(iri)) for f, iri in METRIC_FIELDS} | _owner(node.label))
        elif kind_of(node) == "dataset":
            datasets.append({"id": graph.short(node.id), "name": graph.name(node),
                             **_fields(node, GOVERNANCE)})
        elif kind_of(node) == "model":
            models.append({"id": graph.short(node.id), "name": graph.name(node),
                           "version": _one(node, P + "version"), **_fields(node, GOVERNANCE)})
        elif P + "Environment" in types or P + "Code" in types:
            envs.append(_fields(node, ENV_FIELDS))
        elif "activity" in node.kinds and P + "PolicyCheck" not in types:
            others.append(graph.short(node.id))
    environment: dict[str, Any] = {}
    for e in envs:
        environment.update(e)
    kinds = Counter(n.kinds for n in graph.nodes.values())  # a handful of distinct (shared) sets
    return {
        "files": files,
        "counts": {k: sum(c for ks, c in kinds.items() if k in ks) for k in ("entity", "activity", "agent")}
        | {"relations": graph.relations},
        "runs": runs,
        "parameters": params,
        "metrics": sorted(metrics, key=lambda m: (str(m["context"]), str(m["name"]))),
        "datasets": datasets,
        "models": models,
        "environment": environment,
        "other_activities": others[:50],
    }
