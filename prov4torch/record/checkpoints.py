"""Checkpoints a run produces (``log_model``) and uses (``load_model``), with their lineage.

A produced checkpoint is content-addressed, chains to the previous version of the
same name (``prov:Revision``), derives from the run's training data and base models,
and inherits their governance; its lineage card is stored so a later run that loads
it finds what it was trained on.
"""

from __future__ import annotations

import datetime as _dt
import os
import sys
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import provjson
from ..errors import InvalidValueError
from ..governance import lineage
from ..governance.tags import inherit
from .events import RunRecord
from .identity import digest_path
from .ids import content_id, local
from .values import PARAM, check_name, check_step


@dataclass(frozen=True)
class ModelVersion:
    """What ``log_model`` recorded: the content-addressed id, version and file."""

    id: str
    name: str
    version: int
    path: str
    sha256: str


def governance_tags(governance: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """A governance summary (expiry as an ISO string) as encoded PROV attributes (expiry as xsd:dateTime)."""
    tags = dict(governance)
    if "p4t:consentExpires" in tags:
        tags["p4t:consentExpires"] = _dt.datetime.fromisoformat(tags["p4t:consentExpires"])
    return provjson.attributes({**tags, **extra})


class Checkpoints:
    """The models one run produced and used; every event goes through ``record``."""

    def __init__(
        self,
        *,
        root: Path,
        run_dir: Path,
        activity: str,
        intended_use: str | None,
        replay: Callable[[], RunRecord],
        clock: Callable[[], float],
        warn_unknown_lineage: bool,
    ) -> None:
        self.root = root
        self.run_dir = run_dir
        self.activity = activity
        self.intended_use = intended_use
        self.replay = replay
        self.clock = clock
        self.warn_unknown_lineage = warn_unknown_lineage
        self.versions: dict[str, list[ModelVersion]] = {}
        self.base_models: list[str] = []

    def produced(
        self, model_or_path: Any, name: str, step: int | None, epoch: int | None, sources: list[str]
    ) -> tuple[ModelVersion, dict[str, Any]]:
        """A new version of model ``name`` (a file path, or a module/state dict saved under the run)."""
        check_name("model name", name, PARAM)
        versions = self.versions.setdefault(name, [])
        version = len(versions) + 1
        if isinstance(model_or_path, (str, os.PathLike)):
            path = Path(model_or_path).resolve()
        else:
            path = self._save(model_or_path, name, version)
        sha, size, _m = digest_path(path)
        mid = content_id("model", sha)
        previous = versions[-1].id if versions else None
        event = {
            "t": "model", "id": mid, "name": name, "version": version, "path": str(path), "sha256": sha,
            "size": size, "step": None if step is None else check_step(step),
            "epoch": None if epoch is None else check_step(epoch), "time": self.clock(),
            "revision_of": previous if previous != mid else None,
            "derived_from": [d for d in dict.fromkeys(sources) if d != mid],
        }
        self._inherit(event)
        mv = ModelVersion(mid, name, version, str(path), sha)
        versions.append(mv)
        return mv, event

    def _save(self, model: Any, name: str, version: int) -> Path:
        torch = sys.modules.get("torch")
        state = model.state_dict() if hasattr(model, "state_dict") else model
        if torch is None or not isinstance(state, Mapping):
            raise InvalidValueError(
                f"log_model needs a path, an nn.Module or a state dict, got {type(model).__name__}", value=model)
        path = self.run_dir / "models" / f"{local(name)}-v{version}.pt"
        path.parent.mkdir(exist_ok=True)
        torch.save(state, path)
        return path

    def used(self, path: str | os.PathLike[str]) -> dict[str, Any]:
        """The event of this run using a checkpoint file as its base model."""
        if not isinstance(path, (str, os.PathLike)):
            raise InvalidValueError(f"load_model takes a path, got {type(path).__name__}", value=path)
        p = Path(path).resolve()
        sha, size, _m = digest_path(p)
        mid = content_id("model", sha)
        event = {"t": "load", "id": mid, "path": str(p), "sha256": sha, "size": size, "time": self.clock()}
        self._bring_lineage(event)
        if mid not in self.base_models:
            self.base_models.append(mid)
        return event

    def _inherit(self, event: dict[str, Any]) -> None:
        """A produced checkpoint inherits the governance of its whole lineage; store its card."""
        record = self.replay()
        derived = event["derived_from"]
        sources = [record.datasets[d].get("governance", {}) for d in derived if d in record.datasets]
        sources += [record.loads[m].get("governance", {}) for m in derived if m in record.loads]
        governance = inherit(sources)
        event["governance"] = governance
        extra = {"p4t:intendedUse": self.intended_use} if self.intended_use else {}
        event["tags"] = governance_tags(governance, extra)
        card = lineage.model_card(event, record.datasets, record.loads, self.activity)
        try:
            lineage.write_card(self.root, card)
        except OSError as exc:
            warnings.warn(f"prov4torch: cannot store the lineage card of {event['id']}: {exc}",
                          RuntimeWarning, stacklevel=4)

    def _bring_lineage(self, event: dict[str, Any]) -> None:
        """A loaded checkpoint brings the lineage recorded when it was produced (by its sha256)."""
        card = lineage.read_card(self.root, event["sha256"])
        if card is None:
            event["tags"] = provjson.attributes({"p4t:lineageKnown": False})
            if self.warn_unknown_lineage:
                warnings.warn(
                    f"prov4torch: no lineage is known for checkpoint {event['path']} (sha256 "
                    f"{event['sha256'][:12]}...) under {self.root}; the policy cannot see the data it was "
                    "trained on", RuntimeWarning, stacklevel=4)
            return
        event["governance"] = card.get("governance", {})
        event["tags"] = governance_tags(event["governance"], {"p4t:lineageKnown": True})
        event["upstream"] = card.get("upstream", {})
        event["derivations"] = card.get("derivations", [])
