"""Journal events -> one rank's PROV-JSON document (DESIGN §4).

``end_run`` and ``recover`` both call :func:`build` with the same kind of input (the
replayed events, the metric series summaries and the sidecar files), so a
recovered file has the shape of a finished one, only marked INCOMPLETE.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from .._version import __version__
from ..provjson import QName, attributes, dumps
from ..safefs import write_atomic
from .builder import DocumentBuilder
from .events import RunRecord, Sidecar, valid_time
from .ids import content_id, job_id, local, run_activity_id
from .journal import SeriesStats, series_sorted


def _agent_ids(start: Mapping[str, Any]) -> tuple[str, str, str | None]:
    person = f"p4t:person/{local(start.get('user', 'unknown'))}"
    recorder = f"p4t:software/prov4torch-{local(start.get('prov4torch', __version__))}"
    torch_version = (start.get("environment") or {}).get("torch")
    torch_agent = f"p4t:software/torch-{local(torch_version)}" if torch_version else None
    return person, recorder, torch_agent


def code_entity_id(run_prefix: str, code: Mapping[str, Any]) -> str:
    commit = code.get("git_commit")
    if commit:
        suffix = f"-dirty-{code['git_diff_sha256'][:16]}" if code.get("git_diff_sha256") else ""
        return f"p4t:code/git-{commit}{suffix}"
    if code.get("script_sha256"):
        return content_id("code", code["script_sha256"])
    return f"{run_prefix}/code"


def fallback(record: RunRecord, error: str) -> dict[str, Any]:
    """The best valid document when ``build`` failed: the rank's activity, its status, and why."""
    start = record.start or {}
    run_id = str(start.get("run_id") or "unknown")
    rank: int = start["rank"] if isinstance(start.get("rank"), int) else 0
    act = run_activity_id(run_id, rank, start.get("attempt") if isinstance(start.get("attempt"), int) else None)
    b = DocumentBuilder()
    t0 = start.get("time")
    end = record.end or {}
    b.activity(act, t0 if valid_time(t0) else None, end.get("time") if valid_time(end.get("time")) else None, {
        "prov:type": QName("mls:Run"), "p4t:runId": run_id, "p4t:rank": rank,
        "p4t:status": str(end.get("status") or "INCOMPLETE"), "p4t:recordError": error[:2000],
    })
    return b.to_dict()


def write_rank(record: RunRecord, series: Iterable[SeriesStats], sidecars: Mapping[str, Sidecar], prov_path: Path,
               journal: Path, journal_failure: str | None = None, **build_options: Any,
               ) -> tuple[dict[str, Any] | None, str | None]:
    """Build and atomically write a rank's document: (what was written, why it is incomplete or missing).

    A record that cannot be built becomes the best valid document that can be (``fallback``: the
    run, its status and the error); a document that cannot be written leaves the journal for
    ``prov4torch recover``.
    """
    error = None
    try:
        doc = build(record, series, sidecars, **build_options)
    except Exception as exc:  # noqa: BLE001 - a bug of ours, or a corrupted journal, must not lose the run
        error = (f"the provenance of this run could not be built ({type(exc).__name__}: {str(exc)[:300]}); "
                 f"{prov_path.name} holds what could be, the journal is {journal}")
        doc = fallback(record, error)
    if journal_failure and not error:
        error = f"the journal {journal} is incomplete: {journal_failure}"
    try:
        write_atomic(prov_path, dumps(doc))
    except (OSError, ValueError) as exc:
        return None, (f"could not write {prov_path}: {getattr(exc, 'strerror', None) or exc}; the journal "
                      f"{journal} is kept: run `prov4torch recover {prov_path.parent}`")
    return doc, error


ARTIFACT_TYPES = {"artifact": "p4t:Artifact", "run-state": "p4t:RunState", "data": "mls:Dataset"}


def _role(role: str) -> str:
    """A usage role as a qualified name (``training`` -> ``p4t:training``)."""
    return role if ":" in role else f"p4t:{local(role)}"


def build(
    record: RunRecord,
    series: Iterable[SeriesStats],
    sidecars: Mapping[str, Sidecar],
    *,
    status_override: str | None = None,
    extra_run_attrs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The PROV-JSON dict of one rank.

    Shared (content-addressed) records carry only content attributes; what is particular to this
    run (a file's path and name, a version number, a script path) goes on this run's usage or
    generation of them, so merging runs that share data or models never conflicts.
    """
    start = record.start
    if not start:
        raise ValueError("journal has no start event")
    run_id = str(start["run_id"])
    rank = int(start.get("rank", 0))
    act = f"{job_id(run_id)}/launcher" if start.get("launcher") else run_activity_id(run_id, rank, start.get("attempt"))
    end = record.end or {}
    status = status_override or end.get("status") or "INCOMPLETE"
    end_time = end.get("time") if record.end else record.last_time
    b = DocumentBuilder()
    _activity(b, record, act, status, end_time, extra_run_attrs)
    person = _agents(b, start, act)
    _context(b, record, act, person)
    _metrics(b, act, series, sidecars, (start.get("time"), end_time))
    _datasets(b, record, act)
    _loads(b, record, act)
    _models(b, record, act, person)
    for aid, art in record.artifacts.items():
        kind = art.get("kind", "artifact")
        b.entity(aid, {"prov:type": QName(ARTIFACT_TYPES.get(kind, "p4t:Artifact")), "p4t:sha256": art.get("sha256"),
                       "p4t:sizeBytes": art.get("size"), "p4t:identity": "content"})
        per_run = {"p4t:name": art.get("name"), "p4t:path": art.get("path")}
        if art.get("used"):  # read, not written: a resumed optimizer or trainer state, say
            b.used(act, aid, "p4t:runState" if kind == "run-state" else "p4t:input", art.get("time"), **per_run)
            continue
        b.generated(aid, act, art.get("time"), **per_run)
        b.attributed(aid, person)
    _decisions(b, record, act)
    if b.refused:
        b.update("activity", act, attributes({"p4t:derivationsRefused": [f"{g} <- {u}" for g, u in b.refused]}))
    return b.to_dict()


def _activity(b: DocumentBuilder, record: RunRecord, act: str, status: str, end_time: Any,
              extra: Mapping[str, Any] | None) -> None:
    start, end = record.start, record.end or {}
    run_id = str(start["run_id"])
    exc = end.get("exception") or {}
    attrs: dict[str, Any] = {
        # a launcher started the ranks and trained nothing itself
        "prov:type": QName("p4t:Launcher") if start.get("launcher") else QName("mls:Run"),
        "prov:label": start.get("run_name") or run_id,
        "p4t:status": status,
        "p4t:runId": run_id,
        "p4t:runName": start.get("run_name"),
        "p4t:experiment": start.get("experiment"),
        "p4t:rank": int(start.get("rank", 0)),
        "p4t:attempt": start.get("attempt"),
        "p4t:worldSize": int(start.get("world_size", 1)),
        "p4t:localRank": int(start.get("local_rank", 0)),
        "p4t:host": start.get("host"),
        "p4t:pid": start.get("pid"),
        "p4t:commandLine": start.get("command_line"),
        "p4t:computeRegion": start.get("region"),
        "p4t:purpose": start.get("purpose"),
        "p4t:exitCode": end.get("exit_code"),
        "p4t:signal": end.get("signal_name"),
        "p4t:exceptionType": exc.get("type"),
        "p4t:exceptionMessage": exc.get("message"),
        "p4t:torchSeed": end.get("torch_seed", start.get("torch_seed")),
        "p4t:journalSkippedEvents": record.skipped or None,
    }
    attrs.update({f"tag:{local(k)}": v for k, v in sorted(record.tags.items())})
    b.activity(act, start.get("time"), end_time, attrs)
    b.update("activity", act, record.run_attrs)  # contributed by samplers etc., already encoded
    if extra:
        b.update("activity", act, extra)
    if start.get("launched_by"):  # a rank started by a launcher process of the same job
        b.activity(str(start["launched_by"]), None, None)  # described in launcher.prov.json
        b.informed(act, str(start["launched_by"]))
    if start.get("previous_attempt"):  # an elastic restart: this attempt follows the one before
        b.activity(str(start["previous_attempt"]), None, None)  # described in its own rank file
        b.informed(act, str(start["previous_attempt"]))
    world = int(start.get("world_size", 1))
    if world > 1:  # a distributed job: ranks exchange gradients, so each rank informs every other
        job = f"{job_id(run_id)}/job"
        b.activity(job, None, None, {"prov:type": QName("p4t:DistributedJob"), "p4t:runId": run_id,
                                     "p4t:worldSize": world})
        b.informed(act, job)
        b.informed(job, act)


def _agents(b: DocumentBuilder, start: Mapping[str, Any], act: str) -> str:
    person, recorder, torch_agent = _agent_ids(start)
    b.agent(person, {"prov:type": QName("prov:Person"), "p4t:userName": start.get("user")})
    b.agent(recorder, {"prov:type": QName("prov:SoftwareAgent"), "prov:label": "prov4torch",
                       "p4t:version": start.get("prov4torch", __version__)})
    b.associated(act, recorder, "p4t:recorder")
    b.delegated(recorder, person)
    if torch_agent:
        b.agent(torch_agent, {"prov:type": QName("prov:SoftwareAgent"), "prov:label": "torch",
                              "p4t:version": start["environment"]["torch"]})
        b.associated(act, torch_agent, "p4t:framework")
        b.delegated(torch_agent, person)
    return person


def _context(b: DocumentBuilder, record: RunRecord, act: str, person: str) -> None:
    start = record.start
    code = start.get("code") or {}
    code_id = code_entity_id(act, code)
    b.entity(code_id, {
        "prov:type": [QName("p4t:Code"), QName("prov:Plan")],
        "p4t:gitCommit": code.get("git_commit"),
        "p4t:gitDirty": code.get("git_dirty"),
        "p4t:gitDiffSha256": code.get("git_diff_sha256"),
        "p4t:scriptSha256": None if code.get("git_commit") else code.get("script_sha256"),
        "p4t:identity": "content" if code.get("git_commit") or code.get("script_sha256") else "unidentified",
    })
    b.used(act, code_id, "p4t:code", None, **{
        "p4t:script": code.get("script"), "p4t:scriptSha256": code.get("script_sha256"),
        "p4t:gitBranch": code.get("git_branch"), "p4t:gitRemote": code.get("git_remote"),
    })
    b.associated(act, person, "p4t:operator", plan=code_id)

    envinfo = {**(start.get("environment") or {}), **record.env_extra}
    pk = start.get("packages") or {}  # the package-list sidecar, recorded by the context capture
    env_id = f"{act}/environment"
    b.entity(env_id, {
        "prov:type": QName("p4t:Environment"),
        "p4t:python": envinfo.get("python"),
        "p4t:pythonImplementation": envinfo.get("python_implementation"),
        "p4t:platform": envinfo.get("platform"),
        "p4t:hostname": envinfo.get("hostname"),
        "p4t:cpuModel": envinfo.get("cpu_model"),
        "p4t:cpuCount": envinfo.get("cpu_count"),
        "p4t:memoryTotalBytes": envinfo.get("memory_total_bytes"),
        "p4t:torchVersion": envinfo.get("torch"),
        "p4t:cudaVersion": envinfo.get("cuda"),
        "p4t:gpuCount": envinfo.get("gpu_count"),
        "p4t:gpuModel": envinfo.get("gpu_models"),
        "p4t:gpuDriver": envinfo.get("gpu_driver"),
        "p4t:gpuMemoryTotalBytes": envinfo.get("gpu_memory_total_bytes"),
        "p4t:packagesSha256": pk.get("sha256"),
        "p4t:packagesCount": pk.get("count"),
        "p4t:sidecar": pk.get("path"),
    })
    b.used(act, env_id, "p4t:environment")

    pol = start.get("policy")
    if pol:
        b.entity(pol["id"], {"prov:type": QName("p4t:Policy"), "prov:label": pol.get("name"),
                             "p4t:version": pol.get("version"), "p4t:sha256": pol.get("sha256") or None})
        b.used(act, pol["id"], "p4t:policy", None, **{"p4t:path": pol.get("source")})
        b.update("activity", act, attributes({"p4t:policyMode": pol.get("mode")}))

    if record.params:
        params_id = f"{act}/params"
        b.entity(params_id, {"prov:type": QName("mls:HyperParameterSetting")})
        b.update("entity", params_id, {f"param:{local(k)}": v for k, v in sorted(record.params.items())})
        b.used(act, params_id, "p4t:parameters")


def _metrics(b: DocumentBuilder, act: str, series: Iterable[SeriesStats], sidecars: Mapping[str, Sidecar],
             window: tuple[Any, Any]) -> None:
    lo, hi = window
    ms = sidecars.get("metrics")
    if ms is not None:
        b.entity(f"{act}/file/metrics.csv", {
            "prov:type": QName("p4t:SidecarFile"), "p4t:path": ms.path, "p4t:sha256": ms.sha256,
            "p4t:points": ms.extra.get("points"), "p4t:pointsDropped": ms.extra.get("dropped") or None,
        })
        b.generated(f"{act}/file/metrics.csv", act)
    for s in series_sorted(series):
        sid = f"{act}/metric/{local(s.context)}/{local(s.name)}"
        b.entity(sid, {
            "prov:type": QName("p4t:MetricSeries"),
            "prov:label": s.name,
            "p4t:name": s.name,
            "p4t:context": s.context,
            "p4t:count": s.count,
            "p4t:firstStep": s.first_step,
            "p4t:lastStep": s.last_step,
            "p4t:first": s.first,
            "p4t:last": s.last,
            "p4t:min": s.min,
            "p4t:max": s.max,
            "p4t:mean": s.mean,
            "p4t:nonFinite": s.non_finite or None,
            "p4t:sidecar": ms.path if ms else None,
            "p4t:sidecarSha256": ms.sha256 if ms else None,
        })
        # generated when its last point was logged; a point stamped by the user outside the run's own
        # time span (an explicit timestamp= in the past) leaves the generation time out rather than break
        # PROV's ordering constraints (the CSV keeps every timestamp)
        t = s.last_time
        inside = t is not None and (lo is None or t >= lo) and (hi is None or t <= hi)
        b.generated(sid, act, t if inside else None)


def _dataset_attrs(ds: Mapping[str, Any]) -> dict[str, Any]:
    """The content attributes of a dataset entity (shared across runs)."""
    files = ds.get("files") or []
    return {
        "prov:type": QName("mls:Dataset"),
        "p4t:identity": ds.get("identity", "content"),
        "p4t:sha256": ds.get("sha256"),
        "p4t:digestMethod": ds.get("digest_method"),
        "p4t:sizeBytes": ds.get("size"),
        "p4t:length": ds.get("length"),
        "p4t:fileCount": ds.get("file_count"),
        "p4t:fileSha256": [f"{name} {sha}" for name, sha, _size in files] or None,
        "p4t:digestCovers": ds.get("covers"),
        "p4t:digestSkipped": ds.get("skipped"),
        "p4t:unidentifiedReason": ds.get("unidentified_reason"),
        "p4t:tagConflict": ds.get("tag_conflicts"),
    }


def _enforced_denials(record: RunRecord) -> Iterator[tuple[str, str | None]]:
    """(data or checkpoint id, the role whose use was checked, if one was) of each enforced deny."""
    for dec in record.decisions:
        attrs = dec.get("attrs") or {}
        if attrs.get("p4t:verdict") == "deny" and attrs.get("p4t:mode") == "enforce":
            for d in dec.get("datasets") or []:
                yield record.resolve(d), dec.get("role")


def blocked_uses(record: RunRecord) -> set[str]:
    """Data and checkpoints whose attachment an enforced policy denied, before any batch of it was read.

    They are recorded (with the decision that names them), never as ``used``: the block is what happened.
    """
    denied = {d for d, role in _enforced_denials(record) if not role}  # a denied role: ``blocked_roles``
    return {d for d in denied if not (record.datasets.get(d) or {}).get("usage")}


def blocked_roles(record: RunRecord) -> set[tuple[str, str]]:
    """(dataset, role): a use under that role denied before a batch of it was read under it (data allowed for
    testing, say, then trained on: its training use was blocked, its testing use stands)."""
    return {(d, role) for d, role in _enforced_denials(record)
            if role and not ((record.datasets.get(d) or {}).get("usage") or {}).get(role)}


def _datasets(b: DocumentBuilder, record: RunRecord, act: str) -> None:
    blocked, blocked_role = blocked_uses(record), blocked_roles(record)
    for did, ds in record.datasets.items():
        b.entity(did, _dataset_attrs(ds))
        b.update("entity", did, ds.get("tags") or {})
        if did in blocked:
            continue
        usage = ds.get("usage") or {}
        for role in ds.get("roles") or ["training"]:
            if (did, role) in blocked_role or (role in usage and not any(usage[role].values())):
                continue  # denied before any of it was read, or its batches turned out to be another role's
            b.used(act, did, _role(role), ds.get("time"), **{
                "p4t:name": ds.get("name"), "p4t:sourceUri": ds.get("source"), "p4t:datasetClass": ds.get("cls"),
                "p4t:tagsFrom": ds.get("tags_from"),
                **{f"p4t:{k}": v for k, v in sorted(usage.get(role, {}).items())},
            })


def _model_attrs(m: Mapping[str, Any]) -> dict[str, Any]:
    """The content attributes of a model entity (shared across runs)."""
    files = m.get("files") or []
    weights = m.get("weights_sha256")
    return {
        "prov:type": QName("mls:Model"),
        "p4t:lineageGap": True if m.get("lineage_gap") else None,
        "p4t:identity": "weights" if weights and m["id"].endswith(weights) else "content",
        "p4t:weightsSha256": weights,
        "p4t:sha256": None if weights and m["id"].endswith(weights) else m.get("sha256"),
        "p4t:rootSha256": m.get("root_sha256"),
        "p4t:fileSha256": [f"{name} {sha}" for name, sha, _size in files] or None,
    }


def _file_attrs(m: Mapping[str, Any]) -> dict[str, Any]:
    """What is particular to one file of a model in one run: where it was, its bytes' digest."""
    return {"p4t:path": m.get("path"), "p4t:sha256": m.get("sha256"), "p4t:sizeBytes": m.get("size")}


def _loads(b: DocumentBuilder, record: RunRecord, act: str) -> None:
    """Checkpoints this run used, with the lineage recorded when they were produced."""
    blocked = blocked_uses(record)
    for mid, ld in record.loads.items():
        b.entity(mid, _model_attrs(ld))
        b.update("entity", mid, ld.get("tags") or {})
        if mid not in blocked:
            b.used(act, mid, "p4t:baseModel", ld.get("time"), **_file_attrs(ld),
                   **{"p4t:lineageKnown": ld.get("lineage_known"), "p4t:lineageFrom": ld.get("lineage_from"),
                      "p4t:lineageSource": ld.get("lineage_source"), "p4t:lineageVerified": ld.get("lineage_verified"),
                      "p4t:lineageConflict": ld.get("lineage_conflicts") or None,
                      "p4t:lineageError": ld.get("lineage_errors") or None})
        for did, up in sorted((ld.get("upstream") or {}).items()):
            b.entity(did, {"prov:type": QName("mls:Dataset"), "p4t:sha256": up.get("sha256"),
                           "p4t:identity": up.get("identity", "content")})
            b.update("entity", did, up.get("tags") or {})
        for generated, used in ld.get("derivations") or []:
            if not b.has("entity", generated):
                b.entity(generated, {"prov:type": QName("mls:Model")})
            b.derived(generated, used)


def _models(b: DocumentBuilder, record: RunRecord, act: str, person: str) -> None:
    """Checkpoints this run produced: one entity and one generation each, however often re-saved."""
    for m in record.models:
        mid = m["id"]
        gen = b.generation_of(mid)
        base = record.loads.get(mid)
        if gen is None and base is not None and (base.get("time") or 0) <= (m.get("time") or 0):
            gen = b.usage_of(act, mid)  # this run used these weights before saving them: not a new model
        if gen is not None:  # identical content saved again: recorded on its one generation (or usage)
            saved = attributes({"p4t:savedAgain": [_dt_value(m.get("time"))], "p4t:savedAgainPath": m.get("path"),
                                "p4t:savedAgainSha256": m.get("sha256"), "p4t:lineageSidecar": m.get("sidecar")})
            for key, value in saved.items():
                gen[key] = value if key not in gen else _as_list(gen[key]) + _as_list(value)
            continue
        b.entity(mid, _model_attrs(m))
        b.update("entity", mid, m.get("tags") or {})
        b.generated(mid, act, m.get("time"), **_file_attrs(m), **{
            "p4t:name": m.get("name"), "p4t:version": m.get("version"), "p4t:step": m.get("step"),
            "p4t:epoch": m.get("epoch"), "p4t:checkpointKind": m.get("kind"), "p4t:saveError": m.get("save_error"),
            "p4t:lineageSidecar": m.get("sidecar"),
        })
        b.attributed(mid, person)
        for src in m.get("derived_from", []):
            b.derived(mid, record.resolve(src), activity=act)
        if m.get("revision_of"):
            b.derived(mid, m["revision_of"], kind="prov:Revision")


def _decisions(b: DocumentBuilder, record: RunRecord, act: str) -> None:
    for i, dec in enumerate(record.decisions, 1):
        check_id = f"{act}/policy-check/{i}"
        dec_id = f"{act}/decision/{i}"
        b.activity(check_id, dec.get("time"), dec.get("time"), {"prov:type": QName("p4t:PolicyCheck")})
        b.informed(check_id, act)
        if dec.get("policy_id"):
            b.entity(dec["policy_id"])
            b.update("entity", dec["policy_id"], dec.get("policy_attrs") or {})
            b.used(check_id, dec["policy_id"], "p4t:policy")
        checked = [record.resolve(d) for d in dec.get("datasets") or []]
        # the checked data is named and linked by influence, never `used`: a check reads tags, it does not
        # process data, and a blocked use must not read as a use
        b.entity(dec_id, {"prov:type": QName("p4t:PolicyDecision"),
                          "p4t:checkedDataset": [QName(d) for d in checked] or None})
        b.update("entity", dec_id, dec.get("attrs") or {})
        b.generated(dec_id, check_id, dec.get("time"))
        for d in checked:
            if b.has("entity", d):
                b.influenced(dec_id, d, **{"prov:type": QName("p4t:checked")})


def _as_list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else [v]


def _dt_value(t: Any) -> Any:
    import datetime as _dt

    return _dt.datetime.fromtimestamp(t, _dt.UTC) if isinstance(t, (int, float)) else None
