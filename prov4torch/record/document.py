"""Journal events -> one rank's PROV-JSON document (DESIGN §4).

``end_run`` and ``recover`` both call :func:`build` with the same kind of input (the
replayed events, the metric series summaries and the sidecar files), so a
recovered file has the shape of a finished one, only marked INCOMPLETE.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .._version import __version__
from ..provjson import QName
from .builder import DocumentBuilder
from .events import RunRecord, Sidecar
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


def build(
    record: RunRecord,
    series: Iterable[SeriesStats],
    sidecars: Mapping[str, Sidecar],
    *,
    status_override: str | None = None,
    extra_run_attrs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The PROV-JSON dict of one rank."""
    start = record.start
    if not start:
        raise ValueError("journal has no start event")
    run_id = start["run_id"]
    rank = int(start.get("rank", 0))
    act = run_activity_id(run_id, rank)
    end = record.end or {}
    status = status_override or end.get("status") or "INCOMPLETE"
    end_time = end.get("time") if record.end else record.last_time
    b = DocumentBuilder()

    # -- the rank's activity -----------------------------------------------------------------
    exc = end.get("exception") or {}
    run_attrs: dict[str, Any] = {
        "prov:type": QName("mls:Run"),
        "prov:label": start.get("run_name") or run_id,
        "p4t:status": status,
        "p4t:runId": run_id,
        "p4t:runName": start.get("run_name"),
        "p4t:experiment": start.get("experiment"),
        "p4t:rank": rank,
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
    }
    run_attrs.update({f"tag:{local(k)}": v for k, v in sorted(record.tags.items())})
    b.activity(act, start.get("time"), end_time, run_attrs)
    # attributes contributed by samplers etc. arrive already encoded
    b.doc["activity"][act].update(record.run_attrs)
    if extra_run_attrs:
        b.doc["activity"][act].update(extra_run_attrs)

    # -- a distributed job: ranks exchange gradients, so each rank informs every other ---------------
    world = int(start.get("world_size", 1))
    if world > 1:
        job = f"{job_id(run_id)}/job"
        b.activity(job, None, None, {"prov:type": QName("p4t:DistributedJob"), "p4t:runId": run_id,
                                     "p4t:worldSize": world})
        b.informed(act, job)
        b.informed(job, act)

    # -- agents ------------------------------------------------------------------------------
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

    prefix = act
    # -- code ----------------------------------------------------------------------------------
    code = start.get("code") or {}
    code_id = code_entity_id(prefix, code)
    b.entity(code_id, {
        "prov:type": [QName("p4t:Code"), QName("prov:Plan")],
        "p4t:gitCommit": code.get("git_commit"),
        "p4t:gitBranch": code.get("git_branch"),
        "p4t:gitRemote": code.get("git_remote"),
        "p4t:gitDirty": code.get("git_dirty"),
        "p4t:gitDiffSha256": code.get("git_diff_sha256"),
        "p4t:script": code.get("script"),
        "p4t:scriptSha256": code.get("script_sha256"),
    })
    b.used(act, code_id, "p4t:code")
    b.associated(act, person, "p4t:operator", plan=code_id)

    # -- environment -------------------------------------------------------------------------------
    envinfo = {**(start.get("environment") or {}), **record.env_extra}
    pk = start.get("packages") or {}  # the package-list sidecar, recorded by the context capture
    env_id = f"{prefix}/environment"
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

    # -- the policy in force -----------------------------------------------------------------------
    pol = start.get("policy")
    if pol:
        b.entity(pol["id"], {"prov:type": QName("p4t:Policy"), "prov:label": pol.get("name"),
                             "p4t:version": pol.get("version"), "p4t:sha256": pol.get("sha256") or None,
                             "p4t:path": pol.get("source")})
        b.used(act, pol["id"], "p4t:policy")
        b.doc["activity"][act]["p4t:policyMode"] = pol.get("mode")

    # -- parameters ----------------------------------------------------------------------------
    if record.params:
        params_id = f"{prefix}/params"
        b.entity(params_id, {"prov:type": QName("mls:HyperParameterSetting")})
        b.doc["entity"][params_id].update({f"param:{local(k)}": v for k, v in sorted(record.params.items())})
        b.used(act, params_id, "p4t:parameters")

    # -- metric series -------------------------------------------------------------------------------
    ms = sidecars.get("metrics")
    if ms is not None:
        b.entity(f"{prefix}/file/metrics.csv", {
            "prov:type": QName("p4t:SidecarFile"), "p4t:path": ms.path, "p4t:sha256": ms.sha256,
            "p4t:points": ms.extra.get("points"),
        })
        b.generated(f"{prefix}/file/metrics.csv", act)
    for s in series_sorted(series):
        sid = f"{prefix}/metric/{local(s.context)}/{local(s.name)}"
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
        b.generated(sid, act, s.last_time)

    # -- datasets ----------------------------------------------------------------------------------
    for did, ds in record.datasets.items():
        attrs = {
            "prov:type": [QName("mls:Dataset")],
            "prov:label": ds.get("name"),
            "p4t:name": ds.get("name"),
            "p4t:sha256": ds.get("sha256"),
            "p4t:digestMethod": ds.get("digest_method"),
            "p4t:sourceUri": ds.get("source"),
            "p4t:sizeBytes": ds.get("size"),
            "p4t:length": ds.get("length"),
            "p4t:datasetClass": ds.get("cls"),
        }
        b.entity(did, attrs)
        b.doc["entity"][did].update(ds.get("tags") or {})
        usage = ds.get("usage") or {}
        for role in ds.get("roles") or ["training"]:
            b.used(act, did, role, ds.get("time"), **{
                f"p4t:{k}": v for k, v in sorted(usage.get(role, {}).items())
            })

    # -- checkpoints loaded, with the lineage recorded when they were produced -----------------------
    for mid, ld in record.loads.items():
        b.entity(mid, {"prov:type": QName("mls:Model"), "p4t:sha256": ld.get("sha256"),
                       "p4t:path": ld.get("path")})
        b.doc["entity"][mid].update(ld.get("tags") or {})
        b.used(act, mid, "p4t:baseModel", ld.get("time"))
        for did, up in sorted((ld.get("upstream") or {}).items()):
            if did not in b.doc.get("entity", {}):
                b.entity(did, {"prov:type": QName("mls:Dataset"), "prov:label": up.get("name"),
                               "p4t:name": up.get("name"), "p4t:sha256": up.get("sha256")})
                b.doc["entity"][did].update(up.get("tags") or {})
        for generated, used in ld.get("derivations") or []:
            if generated not in b.doc.get("entity", {}):
                b.entity(generated, {"prov:type": QName("mls:Model")})
            b.derived(generated, used)

    # -- checkpoints / models produced --------------------------------------------------------------
    for m in record.models:
        mid = m["id"]
        b.entity(mid, {
            "prov:type": QName("mls:Model"),
            "prov:label": m.get("name"),
            "p4t:name": m.get("name"),
            "p4t:version": m.get("version"),
            "p4t:sha256": m.get("sha256"),
            "p4t:path": m.get("path"),
            "p4t:sizeBytes": m.get("size"),
            "p4t:step": m.get("step"),
            "p4t:epoch": m.get("epoch"),
        })
        b.doc["entity"][mid].update(m.get("tags") or {})
        b.generated(mid, act, m.get("time"))
        b.attributed(mid, person)
        for src in m.get("derived_from", []):
            b.derived(mid, src, activity=act)
        if m.get("revision_of"):
            b.derived(mid, m["revision_of"], kind="prov:Revision")

    # -- artifacts ---------------------------------------------------------------------------------------
    for aid, art in record.artifacts.items():
        b.entity(aid, {"prov:type": QName("p4t:Artifact"), "prov:label": art.get("name"),
                       "p4t:path": art.get("path"), "p4t:sha256": art.get("sha256"),
                       "p4t:sizeBytes": art.get("size")})
        b.generated(aid, act, art.get("time"))
        b.attributed(aid, person)

    # -- policy decisions --------------------------------------------------------------------------------
    for i, dec in enumerate(record.decisions, 1):
        check_id = f"{prefix}/policy-check/{i}"
        dec_id = f"{prefix}/decision/{i}"
        b.activity(check_id, dec.get("time"), dec.get("time"), {"prov:type": QName("p4t:PolicyCheck")})
        b.informed(check_id, act)
        if dec.get("policy_id"):
            b.entity(dec["policy_id"], dec.get("policy_attrs") or {})
            b.used(check_id, dec["policy_id"], "p4t:policy")
        # the checked data is named, not `used`: a check reads tags, it does not process data
        b.entity(dec_id, {"prov:type": QName("p4t:PolicyDecision"), **(dec.get("attrs") or {}),
                          "p4t:checkedDataset": dec.get("datasets") or None})
        b.generated(dec_id, check_id, dec.get("time"))

    return b.to_dict()
