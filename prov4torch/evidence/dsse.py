"""DSSE envelopes over in-toto Statement v1, made and checked with securesystemslib.

An envelope is ``{"payloadType": "application/vnd.in-toto+json", "payload": <base64 statement>,
"signatures": [{"keyid", "sig"}]}``; the signature is over DSSE's pre-authentication encoding
``"DSSEv1" SP len(type) SP type SP len(payload) SP payload``. An envelope with no signature is an unsigned
claim: it parses, and never verifies.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import EvidenceError

PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
MAX_ENVELOPE_BYTES = 16 << 20
MAX_SIGNATURES = 16


def statement(subjects: Iterable[Mapping[str, Any]], predicate_type: str,
              predicate: Mapping[str, Any]) -> dict[str, Any]:
    """An in-toto Statement v1."""
    return {"_type": STATEMENT_TYPE, "subject": [dict(s) for s in subjects], "predicateType": predicate_type,
            "predicate": dict(predicate)}


def subject(name: str, sha256: str, annotations: Mapping[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "digest": {"sha256": sha256}}
    if annotations:
        out["annotations"] = {k: v for k, v in annotations.items() if v is not None}
    return out


def envelope(stmt: Mapping[str, Any], signer: Any = None) -> dict[str, Any]:
    """``stmt`` in a DSSE envelope, signed by ``signer`` (a securesystemslib Signer) when one is given."""
    payload = json.dumps(stmt, sort_keys=True, separators=(",", ":")).encode("utf-8")
    if signer is None:
        return {"payloadType": PAYLOAD_TYPE, "payload": base64.b64encode(payload).decode("ascii"), "signatures": []}
    from securesystemslib.dsse import Envelope

    env = Envelope(payload, PAYLOAD_TYPE, {})
    env.sign(signer)
    return dict(env.to_dict())


@dataclass
class Opened:
    """An envelope read: its statement, and the key ids whose signatures verified (empty: unverified)."""

    statement: dict[str, Any]
    verified_by: list[str] = field(default_factory=list)
    signed: bool = False  # it carries at least one signature
    problem: str | None = None  # why none verified, when it is signed

    @property
    def verified(self) -> bool:
        return bool(self.verified_by)


def parse(data: Any, source: str) -> tuple[bytes, str, list[dict[str, str]]]:
    """An envelope's (payload, payloadType, signatures), strictly: EvidenceError naming ``source`` otherwise."""
    if not isinstance(data, dict):
        raise EvidenceError(f"{source}: a DSSE envelope is a JSON object")
    unknown = set(data) - {"payload", "payloadType", "signatures"}
    if unknown:
        raise EvidenceError(f"{source}: unknown key {sorted(unknown)[0]!r} in a DSSE envelope")
    payload, ptype, sigs = data.get("payload"), data.get("payloadType"), data.get("signatures")
    if not isinstance(payload, str) or not isinstance(ptype, str) or not isinstance(sigs, list):
        raise EvidenceError(f"{source}: payload and payloadType must be strings, signatures a list")
    if ptype != PAYLOAD_TYPE:
        raise EvidenceError(f"{source}: payloadType {ptype[:80]!r} is not {PAYLOAD_TYPE}")
    if len(sigs) > MAX_SIGNATURES or not all(isinstance(s, dict) and isinstance(s.get("sig"), str)
                                              and isinstance(s.get("keyid", ""), str) for s in sigs):
        raise EvidenceError(f"{source}: signatures must be at most {MAX_SIGNATURES} objects with a string sig")
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise EvidenceError(f"{source}: the payload is not base64") from None
    return raw, ptype, sigs


def open_envelope(data: Any, keys: Iterable[Any], source: str) -> Opened:
    """Parse and verify an envelope against trusted ``keys`` (securesystemslib Keys). The statement is returned
    whether or not a signature verifies; ``verified_by`` says which trusted keys signed it."""
    raw, ptype, sigs = parse(data, source)
    try:
        stmt = json.loads(raw)
    except (ValueError, RecursionError):
        raise EvidenceError(f"{source}: the payload is not a JSON statement") from None
    if not isinstance(stmt, dict) or stmt.get("_type") != STATEMENT_TYPE or not isinstance(stmt.get("subject"), list) \
            or not isinstance(stmt.get("predicate"), dict) or not isinstance(stmt.get("predicateType"), str):
        raise EvidenceError(f"{source}: the payload is not an in-toto Statement v1")
    opened = Opened(stmt, signed=bool(sigs))
    if not sigs:
        return opened
    from securesystemslib.dsse import Envelope
    from securesystemslib.signer import Signature  # type: ignore[attr-defined]

    keys = list(keys)
    if not keys:
        opened.problem = "signed, but no trusted key is configured (PROV4TORCH_TRUSTED_KEYS, --key, trusted_keys)"
        return opened
    pae = Envelope(raw, ptype, {}).pae()
    verified = set()
    for sig in sigs:
        # a signature's keyid is only a hint (DSSE): every trusted key is tried, so envelopes made by other
        # implementations (another keyid scheme, or none) verify too
        try:
            value = base64.b64decode(sig["sig"], validate=True).hex()  # securesystemslib holds signatures as hex
        except (binascii.Error, ValueError):
            continue
        for key in keys:
            try:
                key.verify_signature(Signature(key.keyid, value), pae)
            except Exception:  # noqa: BLE001 - not this key's signature, or a malformed one: try the next
                continue
            verified.add(key.keyid)
    opened.verified_by = sorted(verified)
    if not verified:
        opened.problem = "no signature verifies with a trusted key"
    return opened


def subject_digests(stmt: Mapping[str, Any]) -> dict[str, str]:
    """name -> sha256 of a statement's subjects (those that give one)."""
    out = {}
    for s in stmt.get("subject") or []:
        if isinstance(s, dict) and isinstance(s.get("digest"), dict) and isinstance(s["digest"].get("sha256"), str):
            out[str(s.get("name"))] = s["digest"]["sha256"]
    return out
