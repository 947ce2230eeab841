"""Datasets as the run records them: a content-addressed id, what it is, its validated tags."""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import provjson
from ..errors import InvalidValueError
from ..governance.tags import ROLE, governance_attributes
from .identity import digest_path, fingerprint
from .ids import content_id


def dataset_record(
    data: Any, *, name: str | None, role: str, source: str | None, tags: Mapping[str, Any]
) -> dict[str, Any]:
    """The journal event of one dataset attachment (id from its content)."""
    if not isinstance(role, str) or not ROLE.match(role):
        raise InvalidValueError(
            f"role must be a lower-case word such as training/validation/testing, got {role!r}", value=role)
    attrs = governance_attributes(tags)
    torch_dataset = getattr(data, "dataset", None) if type(data).__name__ == "DataLoader" else None
    if torch_dataset is not None:
        data = torch_dataset
    event: dict[str, Any] = {"t": "dataset", "roles": [role]}
    if isinstance(data, (str, os.PathLike)):
        p = Path(data).resolve()
        sha, size, method = digest_path(p)
        event.update(sha256=sha, size=size, digest_method=method, source=source or p.as_uri(), name=name or p.name)
    else:
        paths = dataset_paths(data)
        sha, length, method = fingerprint(data)
        event.update(sha256=sha, length=length, digest_method=method,
                     cls=f"{type(data).__module__}.{type(data).__qualname__}",
                     name=name or type(data).__name__, source=source or (paths[0] if len(paths) == 1 else None))
    event["id"] = content_id("dataset", event["sha256"])
    event["tags"] = provjson.attributes(attrs)
    event["governance"] = {k: (v.astimezone(_dt.UTC).isoformat() if isinstance(v, _dt.datetime) else v)
                           for k, v in attrs.items()}
    return event


def dataset_paths(data: Any) -> list[str]:
    """File paths a dataset object exposes (root, path, file attributes), if any."""
    found = []
    for attr in ("root", "path", "file", "filename", "data_dir"):
        v = getattr(data, attr, None)
        if isinstance(v, (str, os.PathLike)) and os.path.exists(v):
            found.append(Path(v).resolve().as_uri())
    return found

