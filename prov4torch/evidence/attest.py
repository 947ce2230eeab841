"""Run attestations: an in-toto Statement v1 with a SLSA provenance v1 predicate, in a DSSE envelope, one JSON
line of ``<run>/attestation.intoto.jsonl`` per signing (each rank at its end; ``prov4torch run`` again for the
merged document).

Subjects are the checkpoints the run produced (file sha256; weights digest as an annotation) and the PROV
documents it wrote; the predicate's ``buildDefinition`` holds the command line and parameters
(``externalParameters``) and the datasets and base models used with their digests, roles and licences
(``resolvedDependencies``); ``runDetails.byproducts`` the PROV documents' digests again. The digests are the
ones the recorder computed while the run went on: no checkpoint is read again to sign it.

``verify`` checks each envelope's signature against trusted keys, then each subject against the bytes on
disk, and each checkpoint's signed lineage sidecar.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import EvidenceError, NotRegularFile
from ..safefs import CLOEXEC, NOFOLLOW, file_sha256, read_or_raise, read_regular
from . import dsse

ATTESTATION = "attestation.intoto.jsonl"
SLSA_PROVENANCE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "https://w3id.org/prov4torch/training/v1"
MAX_ATTESTATION_BYTES = 64 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def provenance(*, run_id: str, builder: str, command: str | None, params: Mapping[str, Any],
               dependencies: Iterable[Mapping[str, Any]], byproducts: Iterable[Mapping[str, Any]],
               started: str | None, finished: str | None, status: str | None) -> dict[str, Any]:
    """A SLSA provenance v1 predicate for a training run."""
    return {
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "externalParameters": {"commandLine": command, "parameters": dict(params)},
            "internalParameters": {"status": status},
            "resolvedDependencies": [dict(d) for d in dependencies],
        },
        "runDetails": {
            "builder": {"id": builder},
            "metadata": {"invocationId": run_id, "startedOn": started, "finishedOn": finished},
            "byproducts": [dict(b) for b in byproducts],
        },
    }


def append(run_dir: Path, envelope: Mapping[str, Any]) -> Path:
    """Append one envelope as a line of the run's attestation file (created if missing, never through a link)."""
    path = run_dir / ATTESTATION
    line = (json.dumps(envelope, sort_keys=True, separators=(",", ":")) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | NOFOLLOW | CLOEXEC, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def read_envelopes(path: Path) -> list[Any]:
    """The envelopes of an attestation file (EvidenceError naming the file and line otherwise)."""
    raw = read_or_raise(path, MAX_ATTESTATION_BYTES, EvidenceError)
    out = []
    for n, line in enumerate(raw.decode("utf-8", "replace").splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except (ValueError, RecursionError):
                raise EvidenceError(f"{path}: line {n} is not JSON (a torn or edited envelope)") from None
    return out


# -- verifying ----------------------------------------------------------------------------------------------

@dataclass
class Finding:
    """One line of ``verify``: what was checked, whether it holds, why not."""

    path: str
    what: str
    ok: bool
    detail: str = ""
    unreadable: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        mark = "ok" if self.ok else ("UNREADABLE" if self.unreadable else "FAILED")
        return f"{mark}: {self.path}: {self.what}" + (f": {self.detail}" if self.detail else "")


def verify_run_dir(run_dir: Path, keys: list[Any]) -> list[Finding]:
    """Every envelope of ``run_dir``'s attestation: signature, then each subject against the bytes on disk."""
    path = run_dir / ATTESTATION
    if not os.path.lexists(path):
        return [Finding(str(run_dir), "attestation", False, f"no {ATTESTATION}: the run was not signed "
                        "(give it a key: prov4torch keys init, or PROV4TORCH_SIGNING_KEY)")]
    try:
        envelopes = read_envelopes(path)
    except EvidenceError as exc:
        return [Finding(str(path), "attestation", False, str(exc), unreadable=True)]
    findings: list[Finding] = []
    hashed: dict[Path, str] = {}  # a subject named by several envelopes is read once
    for i, data in enumerate(envelopes, 1):
        try:
            opened = dsse.open_envelope(data, keys, f"{path}#{i}")
        except EvidenceError as exc:
            findings.append(Finding(str(path), f"envelope {i}", False, str(exc)))
            continue
        if not opened.verified:
            findings.append(Finding(str(path), f"envelope {i} signature", False,
                                    opened.problem or "not signed"))
            continue
        findings.append(Finding(str(path), f"envelope {i} signature", True, f"key {', '.join(opened.verified_by)}"))
        for s in opened.statement.get("subject") or []:
            findings.append(check_subject(run_dir, s, hashed))
    return findings


def check_subject(base: Path, s: Any, hashed: dict[Path, str] | None = None) -> Finding:
    """A statement's subject against the file it names (relative to ``base``, or its annotated path)."""
    if not isinstance(s, dict) or not isinstance(s.get("name"), str):
        return Finding(str(base), "subject", False, "a subject without a name")
    want = (s.get("digest") or {}).get("sha256") if isinstance(s.get("digest"), dict) else None
    annotations: dict[str, Any] = s["annotations"] if isinstance(s.get("annotations"), dict) else {}
    candidates = [base / s["name"]]
    if isinstance(annotations.get("path"), str):
        candidates.insert(0, Path(annotations["path"]))
    target = next((c for c in candidates if os.path.lexists(c)), candidates[-1])
    try:
        got = hashed[target] if hashed is not None and target in hashed else file_sha256(target)
        if hashed is not None:
            hashed[target] = got
    except (OSError, NotRegularFile) as exc:
        return Finding(str(target), f"subject {s['name']}", False, f"cannot read: {exc}", unreadable=True)
    if got != want:
        return Finding(str(target), f"subject {s['name']}", False,
                       f"sha256 {got[:16]}... is not the attested {str(want)[:16]}...: the file changed")
    return Finding(str(target), f"subject {s['name']}", True, f"sha256 {got[:16]}...")


def verify_sidecar(checkpoint: Path, sidecar: Path, keys: list[Any]) -> list[Finding]:
    """A checkpoint's signed lineage card: its signature and its subject against the checkpoint's bytes."""
    try:
        data = json.loads(read_regular(sidecar, 16 << 20))
        opened = dsse.open_envelope(data, keys, str(sidecar))
    except (OSError, ValueError, RecursionError, EvidenceError) as exc:
        return [Finding(str(sidecar), "lineage card", False, str(exc)[:300],
                        unreadable=isinstance(exc, OSError))]
    if not opened.verified:
        return [Finding(str(sidecar), "lineage card signature", False, opened.problem or "not signed")]
    out = [Finding(str(sidecar), "lineage card signature", True, f"key {', '.join(opened.verified_by)}")]
    subjects = opened.statement.get("subject") or []
    if not subjects:
        return [*out, Finding(str(sidecar), "lineage card subject", False, "no subject")]
    s = dict(subjects[0]) if isinstance(subjects[0], dict) else {}
    s["annotations"] = {**(s.get("annotations") or {}), "path": str(checkpoint)}
    return [*out, check_subject(checkpoint.parent, s)]


def document_signed(doc: Path, keys: list[Any]) -> Finding:
    """Whether a PROV document is a subject of a verified envelope in its run directory's attestation, with the
    digest it has on disk."""
    path = doc.parent / ATTESTATION
    try:
        got = file_sha256(doc)
        envelopes = read_envelopes(path) if os.path.lexists(path) else []
    except (OSError, EvidenceError) as exc:
        return Finding(str(doc), "signed document", False, str(exc)[:300], unreadable=True)
    for i, data in enumerate(envelopes, 1):
        try:
            opened = dsse.open_envelope(data, keys, f"{path}#{i}")
        except EvidenceError:
            continue
        if opened.verified and dsse.subject_digests(opened.statement).get(doc.name) == got:
            return Finding(str(doc), "signed document", True, f"key {', '.join(opened.verified_by)}")
    why = "no attestation beside it" if not envelopes else "no verified attestation names its current digest"
    return Finding(str(doc), "signed document", False, f"{why}: unsigned, or changed since it was signed")


def verify(paths: Iterable[str | os.PathLike[str]], keys: list[Any],
           key_files: list[Path] | None = None) -> list[Finding]:
    """``prov4torch verify``: run directories (their attestation), PROV documents (signed by an attestation beside
    them) and checkpoints (their signed lineage sidecar, and an OMS signature beside them, checked against the
    trusted ``key_files``)."""
    findings: list[Finding] = []
    for raw in paths:
        p = Path(raw)
        from . import oms

        if p.exists() and os.path.lexists(oms.signature_path(p)):
            ok, detail = oms.verify(p, key_files or [])
            findings.append(Finding(str(p), "OMS signature", ok, detail))
            if not os.path.lexists(p.with_name(p.name + ".lineage.json")):
                continue
        if p.is_dir() and (p / ATTESTATION).exists():
            findings += verify_run_dir(p, keys)
        elif p.is_file() and p.name.endswith(".prov.json"):
            findings.append(document_signed(p, keys))
        elif os.path.lexists(p.with_name(p.name + ".lineage.json")):
            findings += verify_sidecar(p, p.with_name(p.name + ".lineage.json"), keys)
        elif p.is_dir():
            findings += verify_run_dir(p, keys)
        elif not os.path.lexists(p):
            findings.append(Finding(str(p), "path", False, "no such file or directory", unreadable=True))
        else:
            findings.append(Finding(str(p), "evidence", False, "nothing to verify: not a run directory, a PROV "
                                    "document or a checkpoint with a lineage sidecar"))
    return findings
