"""Checkpoints a run produces (``log_model``) and uses (``load_model``), with their lineage.

A produced checkpoint is content-addressed, chains to the previous version of the
same name (``prov:Revision``), derives from the run's training data and base models,
and inherits their governance; its lineage card is stored so a later run that loads
it finds what it was trained on.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import events as ev
from .. import provjson
from ..errors import InvalidValueError, Prov4TorchError
from ..governance import lineage
from ..governance.declared import DECLARED
from ..governance.index import LineageIndex
from ..governance.tags import governance_attributes, inherit
from ..safefs import open_new
from ..warn import warn
from .identity import (
    MANIFEST_METHOD,
    NO_CACHE,
    DigestCache,
    digest_files,
    digest_path,
    safetensors_weights_digest,
    state_dict_of,
    weights_digest,
)
from .ids import content_id, local
from .paths import RunFiles
from .replay import RunRecord
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


INDEX_SUFFIXES = (".safetensors.index.json", ".bin.index.json", ".pt.index.json")
DATA_NAME = re.compile(r"data|corpus|features|labels|targets|tokens|samples|images|embeddings|"
                       r"(^|[_\-.])(train|training|test|valid|validation|val|inputs)([_\-.]|\d|$)", re.IGNORECASE)
STATE_NAME = re.compile(r"(optim|optimizer|scheduler|sched|scaler|rng|random|trainer_state|training_args|args|"
                        r"state)", re.IGNORECASE)


_COUNTER = re.compile(r"[-_.]?(epoch|ep|step|iter|it|e|s|v)?[-_.]?\d+$", re.IGNORECASE)


def model_name(f: str | os.PathLike[str]) -> str:
    """The model a checkpoint file is a version of: ``mnist-epoch2.pt`` -> ``mnist`` (so versions chain);
    a file inside a checkpoint directory (``checkpoint-500/model.safetensors``) is named after the folder."""
    path = Path(f)
    stem = path.stem if path.suffix else path.name
    if stem in ("model", "pytorch_model", "last", "best", "checkpoint", "weights") and path.parent.name:
        stem = path.parent.name
    base = _COUNTER.sub("", stem) or stem
    safe = "".join(c if c.isalnum() or c in "_.-" else "_" for c in base).strip("_.-")
    return safe or "checkpoint"


def classify(obj: Any, path: str | os.PathLike[str] | None = None) -> str:
    """What a saved or loaded object is: ``model`` (weights), ``data``, or ``run-state`` (optimizer,
    scheduler, RNG or trainer state, arguments).

    A module, or a mapping holding a state dict (also a framework checkpoint with ``state_dict``), is a
    model, unless the file is named like data (``traindata.pt``) and the mapping's keys are not dotted
    parameter names; a tensor, an array or a sequence of them is data; anything else is run state.
    """
    stem = Path(str(path)).stem if path is not None else ""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(obj, torch.nn.Module):
        return "model"
    if (torch is not None and isinstance(obj, torch.Tensor)) or type(obj).__name__ == "ndarray":
        return "data"
    if isinstance(obj, (list, tuple)) and obj and all(
            (torch is not None and isinstance(x, torch.Tensor)) or type(x).__name__ == "ndarray" for x in obj):
        return "data"
    sd = state_dict_of(obj)
    if sd:
        looks_like_parameters = any("." in k or k.endswith(("weight", "bias")) for k in sd)
        if DATA_NAME.search(stem) and not looks_like_parameters:
            return "data"
        if STATE_NAME.search(stem) and not looks_like_parameters:
            return "run-state"
        return "model"
    return "run-state"


def _index_shards(index: Path) -> list[Path] | None:
    """The shard files a sharded checkpoint's index names (``weight_map``), or None."""
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
        shards = sorted(set(data["weight_map"].values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    paths = [index.parent / str(s) for s in shards]
    return paths if paths and all(p.is_file() for p in paths) else None


def _torch_weights(path: Path) -> str | None:
    """The weights digest of a torch checkpoint file, loaded safely (weights only, memory-mapped)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        # torch.serialization.load: the function itself, never a patch installed over torch.load
        obj = torch.serialization.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - not a torch file, or not weights only: the file digest stands
        return None
    return weights_digest(obj)


def checkpoint_digest(path: Path, obj: Any = None, cache: DigestCache = NO_CACHE) -> dict[str, Any]:
    """The identity of a checkpoint: its bytes (one file, or per-file digests and a root digest for a
    directory or a sharded checkpoint with its index) and, when it holds weights, their digest."""
    weights: str | None = None
    shards: list[Path] | None
    if path.is_dir():
        d = digest_path(path, cache)
        shards = sorted(path.glob("*.safetensors"))
        weights = safetensors_weights_digest(shards) if shards else weights_digest(obj) if obj is not None else None
    elif path.name.endswith(INDEX_SUFFIXES) and (shards := _index_shards(path)) is not None:
        d = digest_files([path, *shards], path.parent, cache)
        weights = safetensors_weights_digest(shards) if path.name.endswith(".safetensors.index.json") else None
    else:
        d = digest_path(path, cache)
        if path.suffix == ".safetensors":
            weights = safetensors_weights_digest([path])
        elif obj is not None:
            weights = weights_digest(obj)
        else:
            weights = _torch_weights(path)
    out: dict[str, Any] = {"sha256": d.sha256, "size": d.size, "weights_sha256": weights}
    if d.method == MANIFEST_METHOD:
        out["root_sha256"] = d.sha256
        out["files"] = [[f.name, f.sha256, f.size] for f in d.files]
    out["id"] = f"p4t:model/weights-sha256-{weights}" if weights else content_id("model", d.sha256)
    return out


MAX_TIDY = 10_000  # sidecars looked at per folder at the end of a run


class Checkpoints:
    """The models one run produced and used; every event goes through ``record``."""

    def __init__(
        self,
        *,
        root: Path,
        files: RunFiles,
        activity: str,
        intended_use: str | None,
        replay: Callable[[], RunRecord],
        clock: Callable[[], float],
        warn_unknown_lineage: bool,
        cache: DigestCache = NO_CACHE,
        sidecars: bool = True,
        signer: Callable[[], Any] = lambda: None,
        trusted_keys: Callable[[], list[Any]] = list,
    ) -> None:
        self.root = root
        self.files = files
        self.activity = activity
        self.intended_use = intended_use
        self.replay = replay
        self.clock = clock
        self.warn_unknown_lineage = warn_unknown_lineage
        self.cache = cache
        self.sidecars = sidecars
        self.signer = signer  # the run's signing key (a securesystemslib Signer), or None: cards go unsigned
        self.trusted_keys = trusted_keys  # public keys whose signed cards are trusted
        self.versions: dict[str, list[ModelVersion]] = {}
        self.index_failed = False  # the lineage index could not be written: said once, left for `index rebuild`
        self.base_models: list[str] = []
        self.produced_ids: set[str] = set()
        self.cards: dict[str, dict[str, Any]] = {}  # model id -> its lineage card
        self.written: dict[Path, str] = {}  # sidecars written -> the model id each names
        self.gaps: list[str] = []  # checkpoints saved with no identified training data

    def produced(
        self, model_or_path: Any, name: str, step: int | None, epoch: int | None, sources: list[str],
        obj: Any = None,
    ) -> tuple[ModelVersion, ev.ModelSaved]:
        """A new version of model ``name`` (a file path, or a module/state dict saved under the run).

        ``obj`` is what was saved to the path, when known (its weights digest needs no re-read).
        """
        check_name("model name", name, PARAM)
        versions = self.versions.setdefault(name, [])
        version = len(versions) + 1
        save_error = None
        if isinstance(model_or_path, (str, os.PathLike)):
            path = Path(model_or_path).resolve()
            if not path.exists():
                raise InvalidValueError(f"{path} does not exist: give the checkpoint file or directory",
                                        value=str(path))
            ident = checkpoint_digest(path, obj, self.cache)
        else:
            path, obj, save_error = self._save(model_or_path, name, version)
            ident = (checkpoint_digest(path, obj, self.cache) if save_error is None
                     else self._unsaved(obj, f"{self.activity}/model/{local(name)}-v{version}"))
        mid = ident["id"]
        previous = versions[-1].id if versions else None
        resaved = mid in self.produced_ids  # identical content again: no new version, no new derivation
        self.produced_ids.add(mid)
        event = {
            **ident, "name": name, "version": version, "path": None if save_error else str(path),
            "save_error": save_error,
            "step": None if step is None else check_step(step),
            "epoch": None if epoch is None else check_step(epoch), "time": self.clock(),
            "revision_of": previous if previous != mid and not resaved else None,
            "derived_from": [] if resaved else [d for d in dict.fromkeys(sources) if d != mid],
        }
        if not resaved:
            self._inherit(event)
        elif mid in self.cards:  # a copy elsewhere (a final save): its own sidecar
            self._sidecar(event, self.cards[mid])
        mv = ModelVersion(mid, name, version, "" if save_error else str(path), ident["sha256"] or "")
        versions.append(mv)
        return mv, ev.ModelSaved(**event)

    def _save(self, model: Any, name: str, version: int) -> tuple[Path, Any, str | None]:
        """Save a module/state dict under the run directory: to a temporary name, then renamed, so a
        killed process never leaves a truncated checkpoint under the final name. A save that fails (disk
        full, directory gone or unwritable) is a warning and an error in the record, never an exception."""
        torch = sys.modules.get("torch")
        state = model.state_dict() if hasattr(model, "state_dict") and not isinstance(model, Mapping) else model
        if torch is None or not isinstance(state, Mapping):
            raise InvalidValueError(
                f"log_model needs a path, an nn.Module or a state dict, got {type(model).__name__}", value=model)
        path = self.files.dir / "models" / f"{local(name)}-v{version}.pt"
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            self.files.models_dir()
            with open_new(tmp, binary=True) as fh:
                torch.save(state, fh)
            os.replace(tmp, path)
        except (OSError, RuntimeError, Prov4TorchError) as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            error = f"could not save {path}: {getattr(exc, 'strerror', None) or exc}"
            warn(f"prov4torch: {error}; the model is recorded by its weights digest")
            return path, state, error
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        return path, state, None

    @staticmethod
    def _unsaved(state: Any, fallback_id: str) -> dict[str, Any]:
        """The identity of weights that could not be written: their digest, from memory."""
        weights = weights_digest(state)
        return {"id": f"p4t:model/weights-sha256-{weights}" if weights else fallback_id, "sha256": None,
                "size": None, "weights_sha256": weights}

    def used(self, path: str | os.PathLike[str], obj: Any = None) -> ev.ModelLoaded:
        """The event of this run using a checkpoint file as its base model."""
        if not isinstance(path, (str, os.PathLike)):
            raise InvalidValueError(f"load_model takes a path, got {type(path).__name__}", value=path)
        p = Path(path).resolve()
        if not p.exists():
            raise InvalidValueError(f"{p} does not exist: give an existing checkpoint file or directory", value=str(p))
        ident = checkpoint_digest(p, obj, self.cache)
        mid = ident["id"]
        event = {**ident, "path": str(p), "time": self.clock()}
        self._bring_lineage(event)
        if mid not in self.base_models:
            self.base_models.append(mid)
        return ev.ModelLoaded(**event)

    def _inherit(self, event: dict[str, Any]) -> None:
        """A produced checkpoint inherits the governance of its whole lineage; its card is stored in the
        store's lineage index and (unless switched off) in a sidecar beside the file."""
        record = self.replay()
        derived = event["derived_from"]
        datasets = {d: record.datasets[d] for d in derived if d in record.datasets}
        loads = {m: record.loads[m] for m in derived if m in record.loads}
        governance = inherit([d.governance for d in datasets.values()] + [m.governance for m in loads.values()])
        identified = [d for d, x in datasets.items() if x.identity in ("content", "declared")] + list(loads)
        if not identified:  # said out loud: the model's record would otherwise just be short
            event["lineage_gap"] = True
            self.gaps.append(str(event.get("path") or event["id"]))
        event["governance"] = governance
        extra = {"p4t:intendedUse": self.intended_use} if self.intended_use else {}
        event["tags"] = governance_tags(governance, extra)
        card = lineage.model_card(
            event, {d: {"name": x.name, "sha256": x.sha256, "tags": x.tags, "governance": x.governance,
                        "identity": x.identity} for d, x in datasets.items()},
            {m: {"upstream": x.upstream, "derivations": x.derivations} for m, x in loads.items()}, self.activity)
        if event.get("lineage_gap"):
            card["lineage_gap"] = True
        signer = self.signer()
        envelope = lineage.card_envelope(Path(event["path"]), card, signer) if event.get("path") else None
        try:  # the index keeps the envelope when it is signed; the sidecar gets the same one (signed once)
            if not self.index_failed:  # a dead database is tried once (not a connect timeout per checkpoint)
                LineageIndex(self.root).put(card, envelope if signer is not None else None)
        except (OSError, Prov4TorchError) as exc:
            self.index_failed = True  # said once; the run's files hold every card for `index rebuild`
            _warn(f"cannot store the lineage card of {event['id']} in the lineage index: {exc}; recording goes "
                  f"on (the card is in the run's PROV file): run `prov4torch index rebuild {self.root}` once the "
                  "index is usable")
        self.cards[event["id"]] = card
        self._sidecar(event, card, envelope)

    def _sidecar(self, event: dict[str, Any], card: dict[str, Any], envelope: dict[str, Any] | None = None) -> None:
        """The card beside the checkpoint file or directory (unless switched off); its path in the event. A copy
        saved elsewhere gets an envelope of its own (its subject names that file)."""
        if not self.sidecars or not event.get("path"):
            return
        checkpoint = Path(event["path"])
        try:
            if envelope is None:
                envelope = lineage.card_envelope(checkpoint, card, self.signer())
            event["sidecar"] = str(lineage.write_sidecar(checkpoint, envelope))
            event["sidecar_signed"] = bool(envelope["signatures"])
        except (OSError, Prov4TorchError) as exc:
            _warn(f"cannot write the lineage sidecar of {checkpoint}: {exc}")
            return
        self.written[lineage.sidecar_path(checkpoint)] = str(event["id"])

    def tidy(self) -> None:
        """At the end of the run: lineage sidecars whose checkpoint is gone are removed, so none describes a file
        that is not there -- those this run wrote for checkpoints deleted since (a trainer's rotation), and, in
        the folders it wrote sidecars to, those an earlier run left for checkpoints this one's trainer rotated
        away (Lightning's ModelCheckpoint removes the previous run's best on resume). Only a file that is a
        prov4torch sidecar (and, for this run's own, still names the model it was written for); never raises."""
        folders: dict[Path, None] = {}
        for sidecar, mid in self.written.items():
            folders[sidecar.parent] = None
            self._remove_orphan(sidecar, mid)
        for folder in folders:
            try:
                found = [p for _, p in zip(range(MAX_TIDY), folder.glob(f"*{lineage.SIDECAR_SUFFIX}"), strict=False)]
            except OSError:
                continue
            for sidecar in found:
                if sidecar not in self.written:
                    self._remove_orphan(sidecar, None)

    def _remove_orphan(self, sidecar: Path, mid: str | None) -> None:
        checkpoint = sidecar.with_name(sidecar.name.removesuffix(lineage.SIDECAR_SUFFIX))
        if os.path.lexists(checkpoint):
            return
        try:
            data = lineage.read_json_file(sidecar, lineage.MAX_SIDECAR_BYTES)
            model = lineage.sidecar_model(data)
            if model is not None and (mid is None or model == mid):
                sidecar.unlink()
        except (OSError, Prov4TorchError) as exc:
            if not isinstance(exc, FileNotFoundError) and os.path.lexists(sidecar):
                _warn(f"cannot remove the lineage sidecar of the deleted checkpoint {checkpoint}: {exc}")

    def _bring_lineage(self, event: dict[str, Any]) -> None:
        """A loaded checkpoint brings the lineage recorded when it was produced: from its sidecar, the
        lineage index, PROV4TORCH_LINEAGE_PATH, or an origin declared for it (a tags file, declare_checkpoint)."""
        digests = [event.get("weights_sha256"), event.get("root_sha256"), event.get("sha256")]
        path = Path(event["path"])
        try:
            keys = self.trusted_keys()
        except Prov4TorchError as exc:  # a listed key that cannot be read: nothing verifies, and it is said
            keys = []
            event.setdefault("lineage_errors", []).append(str(exc))
        found = lineage.find_lineage(path, digests, self.root, keys)
        card, where = found.card, found.where
        event["lineage_source"] = found.source
        event["lineage_verified"] = found.verified
        if found.errors:
            event.setdefault("lineage_errors", []).extend(e[:1000] for e in found.errors)
            if found.card is not None or not self.warn_unknown_lineage:
                _warn(f"lineage of {path}: " + "; ".join(found.errors)[:500])
        if found.conflicts:
            event["lineage_conflicts"] = [c[:1000] for c in found.conflicts]
            _warn(f"lineage sources of {path} disagree; the more restrictive governance is used: "
                  + "; ".join(found.conflicts)[:500])
        if card is None:
            rule = DECLARED.for_checkpoint(paths=[str(path)], digests=[d for d in digests if d])
            if rule is not None:
                attrs = governance_attributes(rule.tags)
                governance = {k: (v.astimezone(_dt.UTC).isoformat() if isinstance(v, _dt.datetime) else v)
                              for k, v in attrs.items()}
                dataset = f"p4t:dataset/declared/{local(str(rule.tags.get('dataset_id') or path.name))}"
                card = lineage.declared_card(event["id"], digests, dataset, governance, provjson.attributes(attrs),
                                             rule.source.describe())
                where = rule.source.describe()
                event["lineage_source"] = "declared"
        event["lineage_known"] = card is not None and not card.get("lineage_gap")
        if card is None:
            if self.warn_unknown_lineage:
                why = ("; ".join(found.errors)[:500] + "; nothing else") if found.errors else "no sidecar, nothing"
                _warn(f"no lineage is known for checkpoint {event['path']} (sha256 {str(event.get('sha256'))[:12]}...):"
                      f" {why} in {self.root} or PROV4TORCH_LINEAGE_PATH; declare its origin with "
                      "prov4torch.declare_checkpoint(path, ...) or a [[checkpoint]] entry in a tags file")
            return
        event["lineage_from"] = where
        event["governance"] = card.get("governance", {})
        event["tags"] = governance_tags(event["governance"], {})
        event["upstream"] = card.get("upstream", {})
        event["derivations"] = card.get("derivations", [])


def _warn(message: str) -> None:
    warn(f"prov4torch: {message}")
