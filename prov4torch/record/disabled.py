"""``DisabledRun``: what ``start_run`` gives when ``PROV4TORCH_DISABLED=1``, and what a forked child
(a DataLoader worker) sees, so it never writes its parent's files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .checkpoints import ModelVersion
from .run import ACTIVE, Run


class DisabledRun(Run):
    """What ``start_run`` returns when ``PROV4TORCH_DISABLED=1``: every call is a no-op."""

    disabled = True

    def __init__(self, **_: Any) -> None:
        self.run_id = "disabled"
        self.appenders = {}  # no series: prov4torch.log_metric's fast path always misses
        self.rank = 0
        self.ended = False
        self.status = "DISABLED"
        self.dir = Path(os.devnull)

    def log_metric(self, *a: Any, **k: Any) -> None:
        return None

    def log_metrics(self, *a: Any, **k: Any) -> None:
        return None

    def log_param(self, *a: Any, **k: Any) -> None:
        return None

    def log_params(self, *a: Any, **k: Any) -> None:
        return None

    def set_tag(self, *a: Any, **k: Any) -> None:
        return None

    def set_tags(self, *a: Any, **k: Any) -> None:
        return None

    def log_artifact(self, *a: Any, **k: Any) -> str:
        return ""

    def log_dataset(self, *a: Any, **k: Any) -> str:
        return ""

    def log_model(self, *a: Any, name: str = "model", **k: Any) -> ModelVersion:
        return ModelVersion("", name, 0, "", "")

    def load_model(self, path: str | os.PathLike[str], **kw: Any) -> Any:
        import torch

        return torch.load(path, **kw)

    def use_model(self, *a: Any, **k: Any) -> str:
        return ""

    def add_run_attributes(self, *a: Any, **k: Any) -> None:
        return None

    def on_end(self, *a: Any, **k: Any) -> None:
        return None

    def flush(self) -> None:
        return None

    def end_run(self, status: str = "FINISHED") -> None:
        self.close(status)

    def close(self, status: str, **_: Any) -> None:
        self.ended = True
        self.status = status
        with ACTIVE.lock:
            if ACTIVE.run is self:
                ACTIVE.run = None

    def __exit__(self, *exc: Any) -> None:
        self.close("FINISHED")

