"""A readable summary of PROV-JSON files: runs, parameters, metrics, datasets, models, energy.

Works on any PROV-JSON (other tools' documents give counts, activities and entities);
prov4torch's own files give the full picture.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..provjson import MLS_NAMESPACE, NAMESPACE, PARAM_NAMESPACE
from .graph import PROV, Graph, Node, expand_dirs, load_graph
from .query import kind_of
from .text import clean_tree

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


def summarize(paths: Iterable[str | Path]) -> dict[str, Any]:
    files = [str(p) for p in expand_dirs(paths)]
    graph = load_graph(files)
    return summarize_graph(graph, files)


def summarize_graph(graph: Graph, files: list[str]) -> dict[str, Any]:
    """The summary, every string from the documents cleaned of escape sequences and control characters."""
    return clean_tree(_summarize(graph, files))  # type: ignore[no-any-return]


def _summarize(graph: Graph, files: list[str]) -> dict[str, Any]:
    runs, params, metrics, datasets, models, envs, others = [], {}, [], [], [], [], []
    for node in sorted(graph.nodes.values(), key=lambda n: n.label):
        types = node.types()
        short = graph.short(node.id)
        if MLS_NAMESPACE + "Run" in types:
            start, end = _one(node, PROV + "startTime"), _one(node, PROV + "endTime")
            runs.append({"id": short, "start": start, "end": end, **_fields(node, RUN_FIELDS),
                         **_fields(node, ENERGY_FIELDS)})
        elif MLS_NAMESPACE + "HyperParameterSetting" in types:
            for attr, values in node.attrs.items():
                if attr.startswith(PARAM_NAMESPACE):
                    params[attr[len(PARAM_NAMESPACE):]] = values[0] if len(values) == 1 else values
        elif P + "MetricSeries" in types:
            metrics.append({"name": _one(node, P + "name"), "context": _one(node, P + "context"),
                            "count": _one(node, P + "count"), "last": _one(node, P + "last"),
                            "min": _one(node, P + "min"), "max": _one(node, P + "max")})
        elif kind_of(node) == "dataset":
            datasets.append({"id": short, "name": graph.name(node),
                             **_fields(node, GOVERNANCE)})
        elif kind_of(node) == "model":
            models.append({"id": short, "name": graph.name(node),
                           "version": _one(node, P + "version"), **_fields(node, GOVERNANCE)})
        elif P + "Environment" in types or P + "Code" in types:
            envs.append(_fields(node, ENV_FIELDS))
        elif "activity" in node.kinds and P + "PolicyCheck" not in types:
            others.append(short)
    environment: dict[str, Any] = {}
    for e in envs:
        environment.update(e)
    relations = sum(1 for _ in graph.edges)
    return {
        "files": files,
        "counts": {k: sum(1 for n in graph.nodes.values() if k in n.kinds) for k in ("entity", "activity", "agent")}
        | {"relations": relations},
        "runs": runs,
        "parameters": params,
        "metrics": sorted(metrics, key=lambda m: (str(m["context"]), str(m["name"]))),
        "datasets": datasets,
        "models": models,
        "environment": environment,
        "other_activities": others[:50],
    }
