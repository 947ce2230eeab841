"""The ``Run``: one rank's recording, from ``start_run`` to ``end_run``.

Hot path: ``log_metric`` validates cheaply (names are checked once and cached),
appends one tuple to a deque and returns; the writer thread does the I/O.
Everything else (params, datasets, models) is rare and may hash files.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import math
import os
import re
import signal as _signal
import socket
import sys
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import capture, env, provjson
from ._version import __version__
from .digest import digest_path
from .distributed import identity, rank_prefix, resolve_run_id
from .document import RunRecord, Sidecar, build, content_id, local
from .errors import ConfigError, InvalidValueError, JournalError, PolicyViolation, RunStateError
from .governance import RuntimePolicy
from .journal import JournalWriter
from .lifecycle import Hooks

_now = time.time
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-/ :]{0,249}$")
_CONTEXT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}$")
_PARAM = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-/]{0,249}$")
END_STATUSES = ("FINISHED", "FAILED", "KILLED", "BLOCKED")


def default_root() -> Path:
    """Where runs go when neither ``out_dir`` nor ``PROV4TORCH_DIR`` says: never the cwd."""
    configured = env.get(env.DIR)
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "prov4torch" / "runs"


@dataclass(frozen=True)
class ModelVersion:
    """What ``log_model`` recorded: the content-addressed id, version and file."""

    id: str
    name: str
    version: int
    path: str
    sha256: str


class _Active:
    """The process-wide active run (one per process, like MLflow's fluent API)."""

    run: Run | None = None
    last_dir: Path | None = None  # the directory of the last run `prov4torch run` managed
    lock = threading.RLock()


ACTIVE = _Active()


def _check_name(kind: str, name: Any, pattern: re.Pattern[str]) -> str:
    if not isinstance(name, str):
        raise InvalidValueError(f"{kind} must be a string, got {type(name).__name__} {name!r}", value=name)
    if not pattern.match(name):
        raise InvalidValueError(
            f"invalid {kind} {name!r}: use letters, digits and _ . - / "
            f"(no commas or leading punctuation, at most 250 characters)",
            value=name,
        )
    return name


def _coerce_metric(name: str, value: Any) -> Any:
    """A metric value as float, or a detached copy of a 0-d CUDA tensor (converted later)."""
    if isinstance(value, (int, float)):  # bool included: True is 1.0
        return float(value)
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        if value.is_cpu:
            try:  # the common case, a 0-d loss on the CPU: .item() (unlike float(t)) never warns
                return float(value.item())
            except (RuntimeError, ValueError, TypeError):
                pass  # several elements, or complex: explained below
        if value.numel() != 1:
            raise InvalidValueError(
                f"metric {name!r}: a tensor metric must hold one number, got shape {tuple(value.shape)}",
                value=value,
            )
        if value.is_complex():
            raise InvalidValueError(f"metric {name!r}: tensor dtype {value.dtype} is not a real number", value=value)
        return value.detach().reshape(()).clone()  # a device tensor: async copy, no sync here
    if isinstance(value, (str, bytes)) or not hasattr(value, "__float__"):
        raise InvalidValueError(
            f"metric {name!r}: value must be a number (int, float, NumPy scalar or one-element tensor), "
            f"got {type(value).__name__} {value!r:.60}",
            value=value,
        )
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise InvalidValueError(f"metric {name!r}: cannot convert {value!r:.60} to a number", value=value) from exc


def _check_step(step: Any) -> int:
    try:
        if isinstance(step, bool):
            raise TypeError
        return int(step.__index__())
    except (AttributeError, TypeError):
        raise InvalidValueError(f"step must be an integer, got {type(step).__name__} {step!r}", value=step) from None


def _check_timestamp(ts: Any) -> float:
    if isinstance(ts, _dt.datetime):
        if ts.tzinfo is None:
            raise InvalidValueError("timestamp datetime must carry a timezone", value=ts)
        return ts.timestamp()
    if isinstance(ts, (int, float)) and not isinstance(ts, bool) and math.isfinite(ts):
        return float(ts)
    raise InvalidValueError(
        f"timestamp must be Unix seconds (a number) or an aware datetime, got {ts!r}", value=ts
    )


def _governance_tags(governance: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """A governance summary (expiry as an ISO string) as encoded PROV attributes (expiry as xsd:dateTime)."""
    tags = dict(governance)
    if "p4t:consentExpires" in tags:
        tags["p4t:consentExpires"] = _dt.datetime.fromisoformat(tags["p4t:consentExpires"])
    return provjson.attributes({**tags, **extra})


def _param_value(key: str, v: Any) -> Any:
    if v is None:
        return "None"
    if isinstance(v, (str, bool, int, float)):
        return v
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(v, torch.Tensor) and v.numel() == 1:
        return v.item()
    if hasattr(v, "item") and callable(v.item):  # NumPy scalars
        try:
            return v.item()
        except (TypeError, ValueError):
            pass
    if isinstance(v, (list, tuple)):
        return str(list(v))
    return str(v)


class Run:
    """One rank's provenance recording. Also a context manager (``end_run`` on exit)."""

    disabled = False
    managed = False  # owned by `prov4torch run`: the script's end_run/with-exit leave it open

    def __init__(
        self,
        *,
        experiment: str | None = None,
        run_name: str | None = None,
        out_dir: str | os.PathLike[str] | None = None,
        run_id: str | None = None,
        region: str | None = None,
        purpose: str | None = None,
        intended_use: str | None = None,
        tags: Mapping[str, Any] | None = None,
        policy: Any = None,
        mode: str | None = None,
        system_metrics: bool | None = None,
        energy: bool | None = None,
        interval_s: float | None = None,
        energy_country: str | None = None,
        flush_interval_s: float | None = None,
        install_hooks: bool = True,
        clock: Callable[[], float] = time.time,
        script: Path | None = None,
    ) -> None:
        self.experiment = _check_name("experiment", experiment or env.get(env.EXPERIMENT) or "default", _PARAM)
        ident = identity()
        self.rank, self.world_size, self.local_rank = ident.rank, ident.world_size, ident.local_rank
        self.run_id = resolve_run_id(run_id)
        script = script or capture.main_script()
        self.run_name = run_name or env.get(env.RUN_NAME) or (script.stem if script else self.run_id)
        self.region = region or env.get(env.REGION)
        self.purpose = purpose or env.get(env.PURPOSE)
        self.intended_use = intended_use or env.get(env.INTENDED_USE)
        policy = policy if policy is not None else env.get(env.POLICY)
        self._policy: RuntimePolicy | None = (
            RuntimePolicy(policy, mode or env.get(env.POLICY_MODE)) if policy is not None else None
        )
        self.root = Path(out_dir).expanduser() if out_dir is not None else default_root()
        self.dir = self.root / self.experiment / self.run_id
        self.stem = rank_prefix(self.rank)
        self.ended = False
        self.status = "RUNNING"
        self._clock = clock
        self._open = True
        self._series: dict[str, dict[str, Callable[[tuple[Any, ...]], None]]] = {}
        self._params: dict[str, Any] = {}
        self._history: list[dict[str, Any]] = []
        self._model_versions: dict[str, list[ModelVersion]] = {}
        self._dataset_roles: dict[str, set[str]] = {}  # id -> every role it was attached with
        self._base_models: list[str] = []
        self._pending_signal: int | None = None
        self._finish_lock = threading.RLock()
        self._end_callbacks: list[Callable[[Run], None]] = []

        self._prepare_dir()
        self.journal_path = self.dir / f"{self.stem}.journal.jsonl"
        self.metrics_path = self.dir / f"{self.stem}.metrics.csv"
        self.prov_path = self.dir / f"{self.stem}.prov.json"
        if self.journal_path.exists():
            raise RunStateError(
                f"{self.journal_path} already exists: run id {self.run_id!r} was used before; "
                "start a run with a new run_id (or unset PROV4TORCH_RUN_ID)"
            )
        self._writer = JournalWriter(
            self.journal_path,
            self.metrics_path,
            flush_interval_s or env.number(env.FLUSH_INTERVAL, 1.0),
        )
        start_event = {
            "t": "start",
            "time": clock(),
            "run_id": self.run_id,
            "run_name": self.run_name,
            "experiment": self.experiment,
            "rank": self.rank,
            "world_size": self.world_size,
            "local_rank": self.local_rank,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "user": capture.user(),
            "command_line": " ".join([sys.executable, *sys.argv]),
            "region": self.region,
            "purpose": self.purpose,
            "intended_use": self.intended_use,
            "prov4torch": __version__,
            "torch_seed": capture.torch_seed(),
            "policy": self._policy.describe() if self._policy else None,
        }
        self._event(start_event, now=True)
        self._writer.start()
        # git, environment and the package list take ~100 ms: gathered off the training thread
        self._context_thread = threading.Thread(
            target=self._capture_context, args=(script,), name="prov4torch-context", daemon=True
        )
        self._context_thread.start()
        for key, value in (tags or {}).items():
            self.set_tag(key, value)
        system = env.flag(env.SYSTEM_METRICS, True) if system_metrics is None else bool(system_metrics)
        measure_energy = env.flag(env.ENERGY, True) if energy is None else bool(energy)
        if interval_s is not None and (not isinstance(interval_s, (int, float)) or interval_s <= 0):
            raise InvalidValueError(f"interval_s must be a positive number of seconds, got {interval_s!r}",
                                    value=interval_s)
        if system or measure_energy:
            from . import samplers

            samplers.attach(
                self, system=system, energy=measure_energy,
                interval_s=float(interval_s or env.number(env.SAMPLE_INTERVAL, samplers.DEFAULT_INTERVAL_S)),
                country=energy_country or env.get(env.COUNTRY),
            )
        self._hooks = Hooks(self) if install_hooks else None
        if self._hooks is not None:
            self._hooks.install()

    def _capture_context(self, script: Path | None) -> None:
        """Record code, environment and installed packages (the packages list in a sidecar)."""
        try:
            packages = capture.packages()
            pk_path = self.dir / f"{self.stem}.packages.txt"
            pk_text = "\n".join(packages) + "\n"
            pk_path.write_text(pk_text, encoding="utf-8")
            self._event({
                "t": "context",
                "code": capture.code_info(script),
                "environment": capture.environment(),
                "packages": {"path": pk_path.name, "count": len(packages),
                             "sha256": hashlib.sha256(pk_text.encode()).hexdigest()},
            })
        except Exception as exc:  # noqa: BLE001 - telemetry never kills training
            warnings.warn(f"prov4torch: could not capture the environment: {exc}", RuntimeWarning, stacklevel=1)

    def _prepare_dir(self) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            probe = self.dir / f".{self.stem}.write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise ConfigError(
                f"cannot write to output directory {self.dir}: {exc.strerror or exc}; "
                f"choose a writable one with out_dir= or {env.DIR}"
            ) from exc

    # -- context manager ----------------------------------------------------------------------
    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if self.ended or self.managed:
            return
        if exc is None:
            self._finish("FINISHED")
        else:
            self._finish_from_exception(exc)

    def __repr__(self) -> str:
        return f"<Run {self.run_id} rank={self.rank} status={self.status} dir={self.dir}>"

    # -- hot path -------------------------------------------------------------------------------
    def log_metric(
        self,
        name: str,
        value: Any,
        step: int | None = None,
        context: str = "training",
        timestamp: float | _dt.datetime | None = None,
    ) -> None:
        """Record one metric point. No I/O, no device sync: the writer thread does the rest."""
        if type(value) is not float:
            value = _coerce_metric(name, value)
        try:  # a known series: validated once, its queue's append bound here
            append = self._series[context][name]
        except (KeyError, TypeError):
            append = self._new_series(name, context)
        if step is not None and type(step) is not int:
            step = _check_step(step)
        append((step, _now() if timestamp is None else _check_timestamp(timestamp), value))

    def _new_series(self, name: Any, context: Any) -> Callable[[tuple[Any, ...]], None]:
        self._require_open("log_metric")
        _check_name("metric name", name, _NAME)
        _check_name("metric context", context, _CONTEXT)
        append = self._writer.add_series(name, context)
        self._series.setdefault(context, {})[name] = append
        return append

    def log_metrics(
        self,
        metrics: Mapping[str, Any],
        step: int | None = None,
        context: str = "training",
        timestamp: float | _dt.datetime | None = None,
    ) -> None:
        """Record several metrics at one step."""
        if not isinstance(metrics, Mapping):
            raise InvalidValueError(f"log_metrics takes a mapping of name -> value, got {type(metrics).__name__}")
        ts = _now() if timestamp is None else _check_timestamp(timestamp)
        for name, value in metrics.items():
            self.log_metric(name, value, step, context, ts)

    # -- rare calls -------------------------------------------------------------------------
    def _require_open(self, what: str) -> None:
        if not self._open:
            raise RunStateError(f"{what}: run {self.run_id} has ended ({self.status}): start a new run to log more")

    def _event(self, event: dict[str, Any], now: bool = False) -> None:
        self._history.append(event)
        if now:
            self._writer.write_event_now(event)
        else:
            self._writer.events.append(event)

    def log_param(self, key: str, value: Any) -> None:
        """Record one hyperparameter; logging a different value for the same key is an error."""
        self._require_open("log_param")
        _check_name("parameter name", key, _PARAM)
        v = _param_value(key, value)
        if key in self._params:
            old = self._params[key]
            same = old == v or (isinstance(old, float) and isinstance(v, float) and math.isnan(old) and math.isnan(v))
            if not same:
                raise InvalidValueError(
                    f"parameter {key!r} was already logged as {old!r}; parameters are immutable "
                    f"within a run (got {v!r}): use another name or a new run",
                    value=value,
                )
            return
        self._params[key] = v
        self._event({"t": "param", "key": key, "value": provjson.value(v)})

    def log_params(self, params: Mapping[str, Any]) -> None:
        if not isinstance(params, Mapping):
            raise InvalidValueError(f"log_params takes a mapping of name -> value, got {type(params).__name__}")
        for key, value in params.items():
            self.log_param(key, value)

    def set_tag(self, key: str, value: Any) -> None:
        """A free-form run tag (may be overwritten)."""
        self._require_open("set_tag")
        _check_name("tag name", key, _PARAM)
        self._event({"t": "tag", "key": key, "value": provjson.value(_param_value(key, value))})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if not isinstance(tags, Mapping):
            raise InvalidValueError(f"set_tags takes a mapping of name -> value, got {type(tags).__name__}")
        for key, value in tags.items():
            self.set_tag(key, value)

    def log_artifact(self, path: str | os.PathLike[str], name: str | None = None) -> str:
        """Record a file or directory this run produced (by sha256; the file is not copied)."""
        self._require_open("log_artifact")
        if not isinstance(path, (str, os.PathLike)):
            raise InvalidValueError(f"log_artifact takes a path, got {type(path).__name__}", value=path)
        p = Path(path).resolve()
        sha, size, _method = digest_path(p)
        aid = content_id("artifact", sha)
        self._event({"t": "artifact", "id": aid, "name": name or p.name, "path": str(p),
                     "sha256": sha, "size": size, "time": self._clock()})
        return aid

    def log_dataset(
        self,
        dataset_or_path: Any,
        name: str | None = None,
        role: str = "training",
        source: str | None = None,
        **tags: Any,
    ) -> str:
        """Record a dataset used by this run; returns its content-addressed id."""
        self._require_open("log_dataset")
        from .lineage import dataset_record

        event = dataset_record(dataset_or_path, name=name, role=role, source=source, tags=tags)
        event["time"] = self._clock()
        self._dataset_roles.setdefault(event["id"], set()).add(role)
        self._event(event)
        self._on_attach(event)
        return str(event["id"])

    def log_model(
        self,
        model_or_path: Any,
        name: str = "model",
        step: int | None = None,
        epoch: int | None = None,
    ) -> ModelVersion:
        """Record a checkpoint: a file path, or a module/state dict saved into the run directory."""
        self._require_open("log_model")
        _check_name("model name", name, _PARAM)
        versions = self._model_versions.setdefault(name, [])
        version = len(versions) + 1
        if isinstance(model_or_path, (str, os.PathLike)):
            path = Path(model_or_path).resolve()
        else:
            torch = sys.modules.get("torch")
            if torch is None:
                raise InvalidValueError("log_model needs a path, an nn.Module or a state dict", value=model_or_path)
            state = model_or_path.state_dict() if hasattr(model_or_path, "state_dict") else model_or_path
            if not isinstance(state, Mapping):
                raise InvalidValueError(
                    f"log_model needs a path, an nn.Module or a state dict, got {type(model_or_path).__name__}",
                    value=model_or_path,
                )
            path = self.dir / "models" / f"{local(name)}-v{version}.pt"
            path.parent.mkdir(exist_ok=True)
            torch.save(state, path)
        sha, size, _m = digest_path(path)
        mid = content_id("model", sha)
        previous = versions[-1].id if versions else None
        derived = self.model_sources()
        event = {
            "t": "model", "id": mid, "name": name, "version": version, "path": str(path), "sha256": sha,
            "size": size, "step": None if step is None else _check_step(step),
            "epoch": None if epoch is None else _check_step(epoch), "time": self._clock(),
            "revision_of": previous if previous != mid else None,
            "derived_from": [d for d in dict.fromkeys(derived) if d != mid],
        }
        self._decorate_model(event)
        mv = ModelVersion(mid, name, version, str(path), sha)
        versions.append(mv)
        self._event(event)
        return mv

    def load_model(self, path: str | os.PathLike[str], **torch_load_kwargs: Any) -> Any:
        """``torch.load`` a checkpoint and record that this run used it (its sha256 links runs)."""
        self.use_model(path)
        import torch

        return torch.load(path, **torch_load_kwargs)

    def use_model(self, path: str | os.PathLike[str]) -> str:
        """Record that this run used a checkpoint file as its base model, without loading it."""
        self._require_open("load_model")
        if not isinstance(path, (str, os.PathLike)):
            raise InvalidValueError(f"load_model takes a path, got {type(path).__name__}", value=path)
        p = Path(path).resolve()
        sha, size, _m = digest_path(p)
        mid = content_id("model", sha)
        event = {"t": "load", "id": mid, "path": str(p), "sha256": sha, "size": size, "time": self._clock()}
        self._decorate_load(event)
        if mid not in self._base_models:
            self._base_models.append(mid)
        self._event(event)
        self._on_attach(event)
        return mid

    # -- lineage and policy --------------------------------------------------------------------
    def _decorate_model(self, event: dict[str, Any]) -> None:
        """A produced checkpoint inherits the governance of its whole lineage; store its card."""
        from . import lineage

        record = RunRecord.replay(self._history)
        sources = [record.datasets[d].get("governance", {}) for d in event["derived_from"] if d in record.datasets]
        sources += [record.loads[m].get("governance", {}) for m in event["derived_from"] if m in record.loads]
        governance = lineage.inherit(sources)
        event["governance"] = governance
        extra = {"p4t:intendedUse": self.intended_use} if self.intended_use else {}
        event["tags"] = _governance_tags(governance, extra)
        card = lineage.model_card(event, record.datasets, record.loads, f"p4t:run/{self.run_id}/rank/{self.rank}")
        try:
            lineage.write_card(self.root, card)
        except OSError as exc:
            warnings.warn(f"prov4torch: cannot store the lineage card of {event['id']}: {exc}",
                          RuntimeWarning, stacklevel=3)

    def _decorate_load(self, event: dict[str, Any]) -> None:
        """A loaded checkpoint brings the lineage recorded when it was produced (by its sha256)."""
        from . import lineage

        card = lineage.read_card(self.root, event["sha256"])
        if card is None:
            event["tags"] = provjson.attributes({"p4t:lineageKnown": False})
            if self._policy is not None:
                warnings.warn(
                    f"prov4torch: no lineage is known for checkpoint {event['path']} (sha256 "
                    f"{event['sha256'][:12]}...) under {self.root}; the policy cannot see the data it was "
                    "trained on", RuntimeWarning, stacklevel=3)
            return
        event["governance"] = card.get("governance", {})
        event["tags"] = _governance_tags(event["governance"], {"p4t:lineageKnown": True})
        event["upstream"] = card.get("upstream", {})
        event["derivations"] = card.get("derivations", [])

    def model_sources(self) -> list[str]:
        """What a model this run produces is derived from: its training datasets, then its base models."""
        training = [d for d, roles in self._dataset_roles.items() if "training" in roles]
        return training + [m for m in self._base_models if m not in training]

    def _on_attach(self, event: dict[str, Any]) -> None:
        """Evaluate the runtime policy when data or a checkpoint is attached."""
        if self._policy is not None:
            trigger = "log_dataset" if event["t"] == "dataset" else "load_model"
            self._policy.check(self, trigger, [event["id"]])

    def gate(self, dataset_id: str) -> None:
        """Before a tracked DataLoader yields its first batch: refuse blocked data."""
        if self._policy is not None:
            self._policy.gate(dataset_id)

    def attach_loader_usage(self, dataset_id: str, role: str, usage: Mapping[str, int]) -> None:
        """Samples, batches and epochs consumed from a dataset (kept up to date by track())."""
        if self._open:
            self._event({"t": "usage", "id": dataset_id, "usage": {role: dict(usage)}})

    def add_run_attributes(self, attrs: Mapping[str, Any]) -> None:
        """Attributes for the rank activity (qualified names -> values), e.g. sampler summaries."""
        self._event({"t": "attrs", "attrs": provjson.attributes(attrs)})

    def update_environment(self, info: Mapping[str, Any]) -> None:
        """Add facts to the environment entity (e.g. GPU models found by NVML)."""
        self._event({"t": "env", "info": dict(info)})

    def on_end(self, callback: Callable[[Run], None]) -> None:
        """Call ``callback(run)`` at the start of ``end_run`` (samplers stop and summarise here)."""
        self._end_callbacks.append(callback)

    def flush(self) -> None:
        """Write everything buffered so far to the journal and metrics files, now."""
        if not self.ended:
            self._writer.flush()

    # -- ending ----------------------------------------------------------------------------------
    def end_run(self, status: str = "FINISHED") -> None:
        """End the run and write ``rank-K.prov.json``. Ending twice is an error."""
        if status not in END_STATUSES:
            raise InvalidValueError(f"status must be one of {', '.join(END_STATUSES)}, got {status!r}", value=status)
        if self.managed and not self.ended:
            return  # `prov4torch run` ends it when the script is done
        if self.ended:
            raise RunStateError(f"run {self.run_id} has already ended ({self.status})")
        self._finish(status)
        if self.status == status and self._write_error:
            raise JournalError(self._write_error)

    _write_error: str | None = None

    def _note_signal(self, signum: int) -> None:
        self._pending_signal = signum
        self._event({"t": "signal", "signal": signum, "signal_name": _signal.Signals(signum).name,
                     "time": self._clock()}, now=True)

    def _finish_from_exception(self, exc: BaseException) -> None:
        if isinstance(exc, SystemExit):
            code = exc.code
            if code is None or code == 0:
                self._finish("FINISHED", exit_code=0)
            else:
                self._finish("FAILED", exit_code=code if isinstance(code, int) else 1,
                             exception=exc if not isinstance(code, int) else None)
        elif isinstance(exc, KeyboardInterrupt):
            self._finish("KILLED", signal_number=self._pending_signal or _signal.SIGINT)
        elif isinstance(exc, PolicyViolation):
            self._finish("BLOCKED", exception=exc)
        else:
            self._finish("FAILED", exception=exc)

    def _finish(
        self,
        status: str,
        *,
        exit_code: int | None = None,
        signal_number: int | None = None,
        exception: BaseException | None = None,
    ) -> None:
        """End the run once, whatever asks (end_run, with-block, excepthook, signal, atexit)."""
        with self._finish_lock:
            if self.ended:
                return
            self.ended = True
            if self._pending_signal is not None and status in ("FINISHED", "FAILED"):
                status, signal_number = "KILLED", self._pending_signal
            elif self._policy is not None and self._policy.blocked and status in ("FINISHED", "FAILED"):
                status = "BLOCKED"
            for callback in self._end_callbacks:  # samplers: final reading, summaries (run still open)
                try:
                    callback(self)
                except Exception as exc:  # noqa: BLE001 - never lose the record over a sampler
                    warnings.warn(f"prov4torch: end-of-run hook failed: {exc}", RuntimeWarning, stacklevel=2)
            self._open = False
            self._context_thread.join(timeout=30)
            self._series = {}  # the hot path now reaches _new_series, which refuses
            self.status = status
            end: dict[str, Any] = {"t": "end", "time": self._clock(), "status": status,
                                   "torch_seed": capture.torch_seed()}
            if exit_code is not None:
                end["exit_code"] = exit_code
            if signal_number is not None:
                end["signal_name"] = _signal.Signals(signal_number).name
                end["exit_code"] = 128 + int(signal_number)
            if exception is not None:
                end["exception"] = {"type": f"{type(exception).__module__}.{type(exception).__qualname__}",
                                    "message": str(exception)[:2000]}
            self._event(end, now=True)
            self._writer.close()
            try:
                self.write_document()
            except Exception as exc:  # noqa: BLE001 - the journal stays; recover can rebuild
                self._write_error = (
                    f"could not write {self.prov_path}: {exc}; the journal is intact: "
                    f"run `prov4torch recover {self.dir}`"
                )
                warnings.warn(self._write_error, RuntimeWarning, stacklevel=2)
            if self._hooks is not None:
                self._hooks.uninstall()
            with ACTIVE.lock:
                if ACTIVE.run is self:
                    ACTIVE.run = None

    def write_document(self) -> dict[str, Any]:
        """Build this rank's PROV-JSON from what was recorded and write it atomically."""
        w = self._writer
        sidecars = {"metrics": Sidecar(self.metrics_path.name, w.csv_sha256, {"points": w.points})}
        doc = build(RunRecord.replay(self._history), w.stats.values(), sidecars)
        provjson.write_atomic(self.prov_path, provjson.dumps(doc))
        return doc


class DisabledRun(Run):
    """What ``start_run`` returns when ``PROV4TORCH_DISABLED=1``: every call is a no-op."""

    disabled = True

    def __init__(self, **_: Any) -> None:
        self.run_id = "disabled"
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
        self._finish(status)

    def _finish(self, status: str, **_: Any) -> None:
        self.ended = True
        self.status = status
        with ACTIVE.lock:
            if ACTIVE.run is self:
                ACTIVE.run = None

    def __exit__(self, *exc: Any) -> None:
        self._finish("FINISHED")


def _after_fork_in_child() -> None:
    """A forked child (DataLoader worker) must not write the parent's files."""
    if ACTIVE.run is not None and not isinstance(ACTIVE.run, DisabledRun):
        ACTIVE.run = DisabledRun()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
