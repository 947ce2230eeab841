"""A run's attestation from its record: the digests the recorder already computed, signed (``evidence.attest``).

Each rank signs at its end (its checkpoints and its PROV document); ``prov4torch run`` signs the merged
document once it is written. Nothing is signed without a key.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .._version import __version__
from ..evidence import attest, dsse
from ..safefs import file_sha256
from .replay import RunRecord

BUILDER = f"https://w3id.org/prov4torch/recorder@{__version__}"


def _iso(t: Any) -> str | None:
    return _dt.datetime.fromtimestamp(t, _dt.UTC).isoformat() if isinstance(t, (int, float)) else None


def _document_subject(path: Path) -> dict[str, Any]:
    return dsse.subject(path.name, file_sha256(path), {"p4t:kind": "prov-document"})


def rank_statement(record: RunRecord, run_dir: Path, documents: Iterable[Path]) -> dict[str, Any]:
    """The statement of one rank: its produced checkpoints and ``documents`` as subjects."""
    subjects = []
    for m in record.models:
        if m.sha256 and m.path:
            p = Path(m.path)
            name = p.relative_to(run_dir).as_posix() if p.is_relative_to(run_dir) else p.name
            subjects.append(dsse.subject(name, m.sha256, {"path": str(p), "p4t:model": m.id,
                                                           "p4t:weightsSha256": m.weights_sha256}))
    docs = [_document_subject(p) for p in documents if p.is_file()]
    deps = []
    for did, ds in sorted(record.datasets.items()):
        gov = ds.governance
        deps.append({"name": ds.name or did, "uri": did,
                     **({"digest": {"sha256": ds.sha256}} if ds.sha256 else {}),
                     "annotations": {"kind": "dataset", "roles": sorted(ds.roles),
                                     "identity": ds.identity,
                                     **({"license": gov["p4t:license"]} if gov.get("p4t:license") else {})}})
    for mid, ld in sorted(record.loads.items()):
        deps.append({"name": Path(ld.path or mid).name, "uri": mid,
                     **({"digest": {"sha256": ld.sha256}} if ld.sha256 else {}),
                     "annotations": {"kind": "base-model", "lineageSource": ld.lineage_source}})
    start, end = record.start, record.end
    predicate = attest.provenance(
        run_id=str(start.run_id if start else None), builder=BUILDER, command=start.command_line if start else None,
        params=record.params, dependencies=deps, byproducts=[{"name": d["name"], "digest": d["digest"]} for d in docs],
        started=_iso(start.time if start else None), finished=_iso(end.time if end else None),
        status=end.status if end else None)
    return dsse.statement([*subjects, *docs], attest.SLSA_PROVENANCE, predicate)


def sign_rank(record: RunRecord, run_dir: Path, documents: Iterable[Path], signer: Any) -> Path:
    """Sign one rank's statement and append it to the run's attestation file."""
    return attest.append(run_dir, dsse.envelope(rank_statement(record, run_dir, documents), signer))


def sign_documents(run_dir: Path, documents: Iterable[Path], signer: Any, run_id: str) -> Path:
    """Sign documents written after the ranks ended (the merged ``run.prov.json``)."""
    docs = [_document_subject(p) for p in documents if p.is_file()]
    predicate = attest.provenance(run_id=run_id, builder=BUILDER, command=None, params={}, dependencies=[],
                                  byproducts=[{"name": d["name"], "digest": d["digest"]} for d in docs],
                                  started=None, finished=None, status=None)
    return attest.append(run_dir, dsse.envelope(dsse.statement(docs, attest.SLSA_PROVENANCE, predicate), signer))
