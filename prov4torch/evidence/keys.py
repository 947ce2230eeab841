"""Signing keys: one ed25519 key per user by default, trusted keys listed by path.

* ``keys init`` writes ``$XDG_CONFIG_HOME/prov4torch/signing-key.pem`` (mode 0600, PKCS#8 PEM) and its
  public half beside it, ``signing-key.pub.pem``, to hand to others.
* ``PROV4TORCH_SIGNING_KEY`` names the private key a run signs with (else the default key, if it exists;
  else nothing is signed). ECDSA P-256 and RSA keys in PEM work too.
* Trusted public keys: ``PROV4TORCH_TRUSTED_KEYS`` (PEM files, ``os.pathsep``-separated), a policy's
  ``trusted_keys``, keys given on the command line, and -- for its own user -- the default key's public half.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .. import env
from ..errors import ConfigError
from ..safefs import read_or_raise

KEY_NAME = "signing-key.pem"
PUB_NAME = "signing-key.pub.pem"
MAX_KEY_BYTES = 64 << 10


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "prov4torch"


def default_key_path() -> Path:
    return config_dir() / KEY_NAME


def public_path(private: Path) -> Path:
    """Where the public half of a private key file lives (``x.pem`` -> ``x.pub.pem``)."""
    name = private.name.removesuffix(".pem")
    return private.with_name(f"{name}.pub.pem")


def init_key(path: str | os.PathLike[str] | None = None, force: bool = False) -> tuple[Path, Path, str]:
    """Make an ed25519 key: (private key file, public key file, key id). Refuses to overwrite unless ``force``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    private = Path(path) if path is not None else default_key_path()
    public = public_path(private)
    if private.exists() and not force:
        raise ConfigError(f"{private} exists: prov4torch keys init refuses to overwrite a key (--force to replace)")
    private.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    if force and private.exists():
        private.unlink()
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    os.chmod(private, 0o600)
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public, load_public(public).keyid


def _pem(path: Path, what: str) -> bytes:
    return read_or_raise(path, MAX_KEY_BYTES, ConfigError, what, f"give a PEM {what} file")


def load_signer(path: str | os.PathLike[str]) -> Any:
    """A securesystemslib ``CryptoSigner`` for a PEM private key file (ConfigError naming the file)."""
    from cryptography.hazmat.primitives import serialization
    from securesystemslib.signer import CryptoSigner  # type: ignore[attr-defined]

    p = Path(path)
    try:
        key = serialization.load_pem_private_key(_pem(p, "private key"), password=None)
        return CryptoSigner(key)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - cryptography's and securesystemslib's errors, one line
        raise ConfigError(f"{p}: not an unencrypted ed25519, ECDSA P-256 or RSA private key in PEM: "
                          f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None


def load_public(path: str | os.PathLike[str]) -> Any:
    """A securesystemslib ``SSlibKey`` for a PEM public key file (ConfigError naming the file)."""
    from cryptography.hazmat.primitives import serialization
    from securesystemslib.signer import SSlibKey  # type: ignore[attr-defined]

    p = Path(path)
    try:
        return SSlibKey.from_crypto(serialization.load_pem_public_key(_pem(p, "public key")))
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"{p}: not a PEM public key: {str(exc).splitlines()[0] if str(exc) else exc}") from None


def signing_key_path() -> Path | None:
    """The private key a run signs with: PROV4TORCH_SIGNING_KEY, else the default key if it exists."""
    named = env.get(env.SIGNING_KEY)
    if named:
        return Path(named).expanduser()
    default = default_key_path()
    return default if default.is_file() else None


def trusted_key_paths(extra: Iterable[str | os.PathLike[str]] = ()) -> list[Path]:
    """The PEM files of the trusted keys (see ``trusted_keys``), in that order, each once."""
    paths = [Path(p).expanduser() for p in extra]
    paths += [Path(p).expanduser() for p in (env.get(env.TRUSTED_KEYS) or "").split(os.pathsep) if p.strip()]
    own = public_path(default_key_path())
    if own.is_file():
        paths.append(own)
    return list(dict.fromkeys(paths))


def trusted_keys(extra: Iterable[str | os.PathLike[str]] = ()) -> list[Any]:
    """Public keys trusted here: ``extra`` (a policy's, the command line's), PROV4TORCH_TRUSTED_KEYS, and the
    default key's public half. A listed file that cannot be read is an error naming it."""
    keys: dict[str, Any] = {}
    for p in trusted_key_paths(extra):
        key = load_public(p)
        keys.setdefault(key.keyid, key)
    return list(keys.values())
