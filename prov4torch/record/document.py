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
from ..events import Context, Dataset, Decision, ModelLoaded, ModelSaved, Start, valid_time
from ..provjson import QName, attributes, dumps
from ..safefs import write_atomic
from .builder import DocumentBuilder
from .ids import content_id, job_id, local, run_activity_id
from .journal import SeriesStats, series_sorted
from .replay import RunRecord, Sidecar


def _agent_ids(start: Start, context: Context) -> tuple[str, str, str | None]:
    person = f"p4t:person/{local(start.user or 'unknown')}"
    recorder = f"p4t:software/prov4torch-{local(start.prov4torch or __version__)}"
    torch_version = context.environment.get("torch")
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
    start, end = record.start, record.end
    run_id = start.run_id if start is not None else "unknown"
    rank = start.rank if start is not None else 0
    act = run_activity_id(run_id, rank, start.attempt if start is not None else None)
    b = DocumentBuilder()
    t0 = start.time if start is not None else None
    t1 = end.time if end is not None else None
    b.activity(act, t0 if valid_time(t0) else None, t1 if valid_time(t1) else None, {
        "prov:type": QName("mls:Run"), "p4t:runId": run_id, "p4t:rank": rank,
        "p4t:status": end.status if end is not None else "INCOMPLETE", "p4t:recordError": error[:2000],
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
    if start is None:
        raise ValueError("journal has no start event")
    run_id = start.run_id
    act = f"{job_id(run_id)}/launcher" if record.launcher else run_activity_id(run_id, start.rank, start.attempt)
    status = status_override or (record.end.status if record.end is not None else "INCOMPLETE")
    end_time = record.end.time if record.end is not None else record.last_time
    b = DocumentBuilder()
    _activity(b, record, start, act, status, end_time, extra_run_attrs)
    person = _agents(b, start, record.context, act)
    _context(b, record, start, act, person)
    _metrics(b, act, series, sidecars, (start.time, end_time))
    _datasets(b, record, act)
    _loads(b, record, act)
    _models(b, record, act, person)
    for aid, art in record.artifacts.items():
        kind = art.kind
        b.entity(aid, {"prov:type": QName(ARTIFACT_TYPES.get(kind, "p4t:Artifact")), "p4t:sha256": art.sha256,
                       "p4t:sizeBytes": art.size, "p4t:identity": "content"})
        per_run = {"p4t:name": art.name, "p4t:path": art.path}
        if art.used:  # read, not written: a resumed optimizer or trainer state, say
            b.used(act, aid, "p4t:runState" if kind == "run-state" else "p4t:input", art.time, **per_run)
            continue
        b.generated(aid, act, art.time, **per_run)
        b.attributed(aid, person)
    _decisions(b, record, act)
    if b.refused:
        b.update("activity", act, attributes({"p4t:derivationsRefused": [f"{g} <- {u}" for g, u in b.refused]}))
    return b.to_dict()


def _activity(b: DocumentBuilder, record: RunRecord, start: Start, act: str, status: str, end_time: Any,
              extra: Mapping[str, Any] | None) -> None:
    end = record.end
    run_id = start.run_id
    exc = (end.exception if end is not None else None) or {}
    attrs: dict[str, Any] = {
        # a launcher started the ranks and trained nothing itself
        "prov:type": QName("p4t:Launcher") if record.launcher else QName("mls:Run"),
        "prov:label": start.run_name or run_id,
        "p4t:status": status,
        "p4t:runId": run_id,
        "p4t:runName": start.run_name,
        "p4t:experiment": start.experiment,
        "p4t:rank": start.rank,
        "p4t:attempt": start.attempt,
        "p4t:worldSize": start.world_size,
        "p4t:localRank": start.local_rank,
        "p4t:host": start.host,
        "p4t:pid": start.pid,
        "p4t:commandLine": start.command_line,
        "p4t:computeRegion": start.region,
        "p4t:purpose": start.purpose,
        "p4t:exitCode": end.exit_code if end is not None else None,
        "p4t:signal": end.signal_name if end is not None else None,
        "p4t:exceptionType": exc.get("type"),
        "p4t:exceptionMessage": exc.get("message"),
        "p4t:torchSeed": end.torch_seed if end is not None else start.torch_seed,
        "p4t:journalSkippedEvents": record.skipped or None,
    }
    attrs.update({f"tag:{local(k)}": v for k, v in sorted(record.tags.items())})
    b.activity(act, start.time, end_time, attrs)
    b.update("activity", act, record.run_attrs)  # contributed by samplers etc., already encoded
    if extra:
        b.update("activity", act, extra)
    if start.launched_by:  # a rank started by a launcher process of the same job
        b.activity(start.launched_by, None, None)  # described in launcher.prov.json
        b.informed(act, start.launched_by)
    if start.previous_attempt:  # an elastic restart: this attempt follows the one before
        b.activity(start.previous_attempt, None, None)  # described in its own rank file
        b.informed(act, start.previous_attempt)
    world = start.world_size
    if world > 1:  # a distributed job: ranks exchange gradients, so each rank informs every other
        job = f"{job_id(run_id)}/job"
        b.activity(job, None, None, {"prov:type": QName("p4t:DistributedJob"), "p4t:runId": run_id,
                                     "p4t:worldSize": world})
        b.informed(act, job)
        b.informed(job, act)


def _agents(b: DocumentBuilder, start: Start, context: Context, act: str) -> str:
    person, recorder, torch_agent = _agent_ids(start, context)
    b.agent(person, {"prov:type": QName("prov:Person"), "p4t:userName": start.user})
    b.agent(recorder, {"prov:type": QName("prov:SoftwareAgent"), "prov:label": "prov4torch",
                       "p4t:version": start.prov4torch or __version__})
    b.associated(act, recorder, "p4t:recorder")
    b.delegated(recorder, person)
    if torch_agent:
        b.agent(torch_agent, {"prov:type": QName("prov:SoftwareAgent"), "prov:label": "torch",
                              "p4t:version": context.environment["torch"]})
        b.associated(act, torch_agent, "p4t:framework")
        b.delegated(torch_agent, person)
    return person


def _context(b: DocumentBuilder, record: RunRecord, start: Start, act: str, person: str) -> None:
    code = record.context.code
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

    envinfo = {**record.context.environment, **record.env_extra}
    pk = record.context.packages  # the package-list sidecar, recorded by the context capture
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

    pol = start.policy
    if pol:
        b.entity(pol["id"], {"prov:type": QName("p4t:Policy"), "prov:label": pol.get("name"),
                             "p4t:version": pol.get("version"), "p4t:sha256": pol.get("sha256") or None})
        # a policy the script's start_run adopted (prov4torch run, none given) was in force from then on, not before
        b.used(act, pol["id"], "p4t:policy", pol.get("adopted"), **{"p4t:path": pol.get("source")})
        b.update("activity", act, attributes({"p4t:policyMode": pol.get("mode"),
                                              "p4t:policyAdoptedAt": _dt_value(pol.get("adopted"))}))

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


def _dataset_attrs(ds: Dataset) -> dict[str, Any]:
    """The content attributes of a dataset entity (shared across runs)."""
    return {
        "prov:type": QName("mls:Dataset"),
        "p4t:identity": ds.identity,
        "p4t:sha256": ds.sha256,
        "p4t:digestMethod": ds.digest_method,
        "p4t:sizeBytes": ds.size,
        "p4t:length": ds.length,
        "p4t:fileCount": ds.file_count,
        "p4t:fileSha256": _file_digests(ds.files),
        "p4t:digestCovers": ds.covers,
        "p4t:digestSkipped": ds.skipped,
        "p4t:unidentifiedReason": ds.unidentified_reason,
        "p4t:tagConflict": ds.tag_conflicts,
    }


def _file_digests(files: list[list[Any]] | None) -> list[str] | None:
    return [f"{f[0]} {f[1]}" for f in files or []] or None


def _enforced_denials(record: RunRecord) -> Iterator[tuple[str, str | None]]:
    """(data or checkpoint id, the role whose use was checked, if one was) of each enforced deny."""
    for dec in record.decisions:
        if dec.enforced_deny:
            for d in dec.datasets:
                yield record.resolve(d), dec.role


def blocked_uses(record: RunRecord) -> set[str]:
    """Data and checkpoints whose attachment an enforced policy denied, before any batch of it was read.

    They are recorded (with the decision that names them), never as ``used``: the block is what happened.
    """
    denied = {d for d, role in _enforced_denials(record) if not role}  # a denied role: ``blocked_roles``
    return {d for d in denied if not record.usage.get(d)}


def blocked_roles(record: RunRecord) -> set[tuple[str, str]]:
    """(dataset, role): a use under that role denied before a batch of it was read under it (data allowed for
    testing, say, then trained on: its training use was blocked, its testing use stands)."""
    return {(d, role) for d, role in _enforced_denials(record)
            if role and not record.usage.get(d, {}).get(role)}


def _datasets(b: DocumentBuilder, record: RunRecord, act: str) -> None:
    blocked, blocked_role = blocked_uses(record), blocked_roles(record)
    for did, ds in record.datasets.items():
        b.entity(did, _dataset_attrs(ds))
    for did, ds in record.datasets.items():  # a view, a transformation or a wrapper of data this run attached
        for source in dict.fromkeys(record.resolve(s) for s in ds.derived_from or ()):
            if source != did and b.has("entity", source):
                b.derived(did, source)
    for did, ds in record.datasets.items():
        b.update("entity", did, ds.tags)
        if did in blocked:
            continue
        usage = record.usage.get(did, {})
        for role in ds.roles or ["training"]:
            if (did, role) in blocked_role or (role in usage and not any(usage[role].values())):
                continue  # denied before any of it was read, or its batches turned out to be another role's
            b.used(act, did, _role(role), ds.time, **{
                "p4t:name": ds.name, "p4t:sourceUri": ds.source, "p4t:datasetClass": ds.cls,
                "p4t:tagsFrom": ds.tags_from,
                **{f"p4t:{k}": v for k, v in sorted(usage.get(role, {}).items())},
            })


def _model_attrs(m: ModelSaved | ModelLoaded) -> dict[str, Any]:
    """The content attributes of a model entity (shared across runs)."""
    weights = m.weights_sha256
    by_weights = bool(weights) and m.id.endswith(str(weights))
    return {
        "prov:type": QName("mls:Model"),
        "p4t:lineageGap": True if isinstance(m, ModelSaved) and m.lineage_gap else None,
        "p4t:identity": "weights" if by_weights else "content",
        "p4t:weightsSha256": weights,
        "p4t:sha256": None if by_weights else m.sha256,
        "p4t:rootSha256": m.root_sha256,
        "p4t:fileSha256": _file_digests(m.files),
    }


def _file_attrs(m: ModelSaved | ModelLoaded) -> dict[str, Any]:
    """What is particular to one file of a model in one run: where it was, its bytes' digest."""
    return {"p4t:path": m.path, "p4t:sha256": m.sha256, "p4t:sizeBytes": m.size}


def _loads(b: DocumentBuilder, record: RunRecord, act: str) -> None:
    """Checkpoints this run used, with the lineage recorded when they were produced."""
    blocked = blocked_uses(record)
    for mid, ld in record.loads.items():
        b.entity(mid, _model_attrs(ld))
        b.update("entity", mid, ld.tags)
        if mid not in blocked:
            b.used(act, mid, "p4t:baseModel", ld.time, **_file_attrs(ld),
                   **{"p4t:lineageKnown": ld.lineage_known, "p4t:lineageFrom": ld.lineage_from,
                      "p4t:lineageSource": ld.lineage_source, "p4t:lineageVerified": ld.lineage_verified,
                      "p4t:lineageConflict": ld.lineage_conflicts or None,
                      "p4t:lineageError": ld.lineage_errors or None})
        for did, up in sorted(ld.upstream.items()):
            b.entity(did, {"prov:type": QName("mls:Dataset"), "p4t:sha256": up.get("sha256"),
                           "p4t:identity": up.get("identity", "content")})
            b.update("entity", did, up.get("tags") or {})
        for generated, used in ld.derivations:
            if not b.has("entity", generated):
                b.entity(generated, {"prov:type": QName("mls:Model")})
            b.derived(generated, used)


def _models(b: DocumentBuilder, record: RunRecord, act: str, person: str) -> None:
    """Checkpoints this run produced: one entity and one generation each, however often re-saved."""
    for m in record.models:
        mid = m.id
        gen = b.generation_of(mid)
        base = record.loads.get(mid)
        if gen is None and base is not None and (base.time or 0) <= (m.time or 0):
            gen = b.usage_of(act, mid)  # this run used these weights before saving them: not a new model
        if gen is not None:  # identical content saved again: recorded on its one generation (or usage)
            saved = attributes({"p4t:savedAgain": [_dt_value(m.time)], "p4t:savedAgainPath": m.path,
                                "p4t:savedAgainSha256": m.sha256, "p4t:lineageSidecar": m.sidecar})
            for key, value in saved.items():
                gen[key] = value if key not in gen else _as_list(gen[key]) + _as_list(value)
            continue
        b.entity(mid, _model_attrs(m))
        b.update("entity", mid, m.tags)
        b.generated(mid, act, m.time, **_file_attrs(m), **{
            "p4t:name": m.name, "p4t:version": m.version, "p4t:step": m.step,
            "p4t:epoch": m.epoch, "p4t:saveError": m.save_error, "p4t:lineageSidecar": m.sidecar,
        })
        b.attributed(mid, person)
        for src in m.derived_from:
            b.derived(mid, record.resolve(src), activity=act)
        if m.revision_of:
            b.derived(mid, m.revision_of, kind="prov:Revision")


def _decisions(b: DocumentBuilder, record: RunRecord, act: str) -> None:
    for i, dec in enumerate(record.decisions, 1):
        _decision(b, record, act, i, dec)


def _decision(b: DocumentBuilder, record: RunRecord, act: str, i: int, dec: Decision) -> None:
    check_id = f"{act}/policy-check/{i}"
    dec_id = f"{act}/decision/{i}"
    b.activity(check_id, dec.time, dec.time, {"prov:type": QName("p4t:PolicyCheck")})
    b.informed(check_id, act)
    if dec.policy_id:
        b.entity(dec.policy_id)
        b.update("entity", dec.policy_id, dec.policy_attrs)
        b.used(check_id, dec.policy_id, "p4t:policy")
    checked = [record.resolve(d) for d in dec.datasets]
    # the checked data is named and linked by influence, never `used`: a check reads tags, it does not
    # process data, and a blocked use must not read as a use
    b.entity(dec_id, {"prov:type": QName("p4t:PolicyDecision"),
                      "p4t:checkedDataset": [QName(d) for d in checked] or None})
    b.update("entity", dec_id, dec.attrs)
    b.generated(dec_id, check_id, dec.time)
    for d in checked:
        if b.has("entity", d):
            ds = record.datasets.get(d)  # named as its use would be: a blocked dataset has no use to name it
            named = {"p4t:name": ds.name, "p4t:sourceUri": ds.source, "p4t:tagsFrom": ds.tags_from} if ds else {}
            b.influenced(dec_id, d, **{"prov:type": QName("p4t:checked"), **named})


def _as_list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else [v]


def _dt_value(t: Any) -> Any:
    import datetime as _dt

    return _dt.datetime.fromtimestamp(t, _dt.UTC) if isinstance(t, (int, float)) else None
