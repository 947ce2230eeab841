"""OpenSSF model signing (OMS, the ``model-signing`` 1.1.1 format) for checkpoints, as an optional extra
(``pip install 'prov4torch[oms]'``, which pins the ``pyOpenSSL`` it imports).

An OMS signature is a Sigstore bundle whose DSSE envelope carries an in-toto statement over the model's files
(its manifest digests); ``attest --oms`` writes one beside the checkpoint (``<checkpoint>.sig``) with an EC key,
and ``verify`` accepts it against EC public keys. prov4torch's own claims -- the lineage card, the run's
attestation -- stay in their own statements with the same subject digest.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import EvidenceError, MissingExtraError

SUFFIX = ".sig"


def signature_path(checkpoint: Path) -> Path:
    return checkpoint.with_name(checkpoint.name + SUFFIX)


def _lib() -> Any:
    try:
        from model_signing import signing, verifying
    except ImportError as exc:
        raise MissingExtraError("OMS model signing needs the model-signing package and the pyOpenSSL it imports: "
                                "pip install 'prov4torch[oms]'") from exc
    return signing, verifying


def sign(checkpoint: str | os.PathLike[str], private_key: str | os.PathLike[str],
         signature: str | os.PathLike[str] | None = None) -> Path:
    """Sign a checkpoint (a file or a directory) with an EC private key (PEM); the signature file written."""
    signing, _ = _lib()
    model = Path(checkpoint)
    if not model.exists():
        raise EvidenceError(f"{model}: no such checkpoint to sign")
    out = Path(signature) if signature is not None else signature_path(model)
    try:
        signing.Config().use_elliptic_key_signer(private_key=str(private_key)).sign(model, out)
    except (ValueError, TypeError, OSError) as exc:
        raise EvidenceError(f"{private_key}: cannot sign {model} with it (an EC private key in PEM is needed): "
                            f"{str(exc)[:200]}") from None
    return out


def verify(checkpoint: str | os.PathLike[str], public_keys: list[Path],
           signature: str | os.PathLike[str] | None = None) -> tuple[bool, str]:
    """(verified, detail): the OMS signature of a checkpoint against each EC public key (PEM) in turn."""
    _, verifying = _lib()
    model = Path(checkpoint)
    sig = Path(signature) if signature is not None else signature_path(model)
    problems = []
    for key in public_keys:
        try:
            verifying.Config().use_elliptic_key_verifier(public_key=str(key)).verify(model, sig)
        except Exception as exc:  # noqa: BLE001 - model-signing's errors: not this key, a changed file
            problems.append(f"{key.name}: {' '.join(str(exc).split())[:160]}")
            continue
        return True, f"OMS signature verifies with {key}"
    if not public_keys:
        return False, "no trusted public key to verify the OMS signature with (--key, PROV4TORCH_TRUSTED_KEYS)"
    return False, "; ".join(problems)
