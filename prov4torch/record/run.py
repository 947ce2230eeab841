"""The ``Run``: one rank's recording, from ``start_run`` to ``end_run``.

Hot path: ``log_metric`` validates cheaply (names are checked once and cached),
appends one tuple to a deque and returns; the writer thread does the I/O.
Everything else (params, datasets, models) is rare and may hash files.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import math
import os
import signal as _signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .. import env, provjson
from .. import events as ev
from ..errors import ConfigError, InvalidValueError, Prov4TorchError, RunStateError
from ..evidence import keys
from ..governance.declared import load_from_env as load_tags_from_env
from ..governance.gate import RuntimePolicy
from ..warn import warn
from . import config, context, ipc
from .attach import AttachMixin
from .attestation import sign_rank
from .checkpoints import Checkpoints, ModelVersion
from .config import default_root
from .datapaths import DataPaths
from .datasets import DatasetIdentifier
from .distributed import elastic_attempt, identity, rank_prefix, resolve_run_id
from .document import build, write_rank
from .helpers import IMPORTED, HelperSink, helper_journal, helper_records
from .identity import DigestCache
from .ids import run_activity_id
from .inputs import HASH_WAIT_S, Inputs
from .journal import JournalWriter
from .metricbuf import Stamped
from .paths import RunFiles
from .replay import RunRecord, Sidecar
from .secrets import redact, redact_text
from .signals import Hooks, ending
from .values import (
    CONTEXT,
    NAME,
    PARAM,
    TensorType,
    check_name,
    check_step,
    check_timestamp,
    coerce_metric,
    param_value,
    reads_user_values,
)

_now = time.time
END_STATUSES = ev.END_STATUSES
RESERVED_SYSTEM_PREFIXES = ("system/", "gpu/")  # sampler series names (context "system")

__all__ = ["ACTIVE", "END_STATUSES", "ModelVersion", "Run", "default_root"]


class _Active:
    """The process-wide active run (one per process, like MLflow's fluent API)."""

    def __init__(self) -> None:
        self._run: Run | None = None
        # the active run's ``appenders`` (the same dict, emptied when it ends): prov4torch.log_metric's fast path
        self.appenders: dict[str, dict[str, Callable[[tuple[Any, ...]], None]]] = {}
        self.lock = threading.RLock()
        self.follow: Callable[[dict[str, dict[str, Callable[[tuple[Any, ...]], None]]]], None] | None = None

    @property
    def run(self) -> Run | None:
        return self._run

    @run.setter
    def run(self, run: Run | None) -> None:
        self._run = run
        self.appenders = run.appenders if run is not None else {}
        if self.follow is not None:  # prov4torch.log_metric keeps it as a global
            self.follow(self.appenders)


ACTIVE = _Active()


class Run(AttachMixin):
    """One rank's provenance recording. Also a context manager (``end_run`` on exit)."""

    disabled = False
    managed = False  # owned by `prov4torch run`: the script's end_run/with-exit leave it open

    def __init__(
        self,
        *,
        run_id: str | None = None,
        tags: Mapping[str, Any] | None = None,
        install_hooks: bool = True,
        clock: Callable[[], float] = time.time,
        script: Path | None = None,
        managed: bool = False,
        defer_signals: bool | None = None,
        helper_of: str | None = None,
        **options: Any,
    ) -> None:
        """Start recording; ``options`` are ``config.resolve``'s (experiment, out_dir, policy, ...). ``helper_of``:
        this process helps the rank with that file stem (``record.helpers``): it writes a helper journal only."""
        config.check_options(options)
        load_tags_from_env()  # prov4torch run --data-tags (also in every rank it launches)
        if tags is not None and not isinstance(tags, Mapping):
            raise InvalidValueError(f"tags must be a mapping of name -> value, got {type(tags).__name__}", value=tags)
        if run_id is not None and (not isinstance(run_id, str) or not run_id.strip()):
            raise InvalidValueError(f"run_id must be a non-empty string, got {run_id!r:.60}", value=run_id)
        settings = config.resolve(**options)
        self.experiment = settings.experiment
        ident = identity()
        self.rank, self.world_size, self.local_rank = ident.rank, ident.world_size, ident.local_rank
        self.run_id = resolve_run_id(run_id)
        script = script or context.main_script()
        self.run_name = settings.run_name or (script.stem if script else self.run_id)
        self.region, self.purpose, self.intended_use = settings.region, settings.purpose, settings.intended_use
        self.clock = clock
        self._policy: RuntimePolicy | None = (
            RuntimePolicy(settings.policy, settings.mode, self._record_now, clock)
            if settings.policy is not None else None
        )
        self.root = settings.root
        self.remote = settings.remote  # published there at the end (``prov4torch.remote``); root is its spool
        self.attempt = elastic_attempt()
        self.helper_of = helper_of
        self.stem = rank_prefix(self.rank, self.attempt) if helper_of is None else \
            helper_journal(Path(), helper_of, os.getpid()).name.removesuffix(".journal.jsonl")
        self.files = RunFiles(self.root, self.experiment, self.run_id, self.stem)
        self.dir = self.files.dir
        self.activity = run_activity_id(self.run_id, self.rank, self.attempt)
        self.ended = False
        self.status = "RUNNING"
        self._open = True
        # context -> name -> the writer's append for that series: the hot path's one lookup (read, never
        # changed, by prov4torch.log_metric's own fast path too, through ACTIVE.appenders; emptied at the end)
        self.appenders: dict[str, dict[str, Callable[[tuple[Any, ...]], None]]] = {}
        self._system_series: dict[str, Callable[[tuple[Any, ...]], None]] = {}  # the samplers' own
        self._params: dict[str, Any] = {}
        self._history: list[ev.Event] = []
        cache = DigestCache(self.root / ".cache" / "digests.sqlite", self.root)
        self.inputs = Inputs(
            datasets=DatasetIdentifier(self.activity if helper_of is None else f"{self.activity}/helper-{os.getpid()}",
                                       cache, self._digest_done),
            checkpoints=Checkpoints(root=self.root, files=self.files, activity=self.activity,
                                    intended_use=self.intended_use, replay=self.replay, clock=clock,
                                    warn_unknown_lineage=self._policy is not None, cache=cache,
                                    sidecars=settings.sidecar, signer=self.signer, trusted_keys=self.trusted_keys),
            policy=self._policy, record=self.record_event, clock=clock,
            document=lambda: build(self.replay(), [], {}), activity=self.activity, intended_use=self.intended_use)
        self._pending_signal: int | None = None
        self._finish_lock = threading.RLock()
        self._end_callbacks: list[Callable[[Run], None]] = []

        # everything that can refuse the arguments, before anything is created on disk
        run_tags = {check_name("tag name", k, PARAM): provjson.value(param_value(k, v))
                    for k, v in (tags or {}).items()}
        # the hooks come first: once the run has files, a signal ends it with a record; one arriving while it starts
        # waits until it has started (``started``): ending it half-made would lose the record or wait on itself
        self.starting, self.managed = True, managed
        self._hooks = Hooks(self, defer_exit=managed if defer_signals is None else defer_signals) \
            if install_hooks else None
        self._begin(script, run_tags, settings)

    def _begin(self, script: Path | None, run_tags: Mapping[str, Any], settings: Any) -> None:
        """The hooks, the files, the start, the data hooks; then ``started`` (with ``defer_exit``, a deferred signal
        raises SignalExit: ``prov4torch run`` calls started() where it catches that)."""
        if self._hooks is not None:
            self._hooks.install()
        try:
            self._open_files(settings.flush_interval_s)
            self._start(script, run_tags, settings)
            # data on its way to the script is watched (and gated) under prov4torch run and whenever a policy is
            # in force; without torch imported there is no DataLoader or Dataset to watch
            watch = (self.managed or self._policy is not None) and "torch" in sys.modules
            self._datapaths = DataPaths(self).install() if watch else None
            if self._datapaths is not None:  # a tensor sent to another process keeps its tags there
                self._datapaths.patches.add(ipc.install(self.inputs.datasets))
        except BaseException:
            if self._hooks is not None:
                self._hooks.uninstall()
            raise
        if self._hooks is None or not self._hooks.defer_exit:
            self.started()

    def started(self) -> None:
        """The run has started: a signal that arrived meanwhile takes effect now, as if it arrived now
        (``prov4torch run`` calls this where the script begins, so that it ends the run as the script's would)."""
        self.starting = False
        if self._hooks is not None:
            self._hooks.release()

    def _open_files(self, flush_interval_s: float) -> None:
        """The run directory, its journal and metrics file (refusing a run id used before)."""
        self.files.create()
        self.journal_path, self.metrics_path, self.prov_path = self.files.journal, self.files.metrics, self.files.prov
        try:
            self._writer = JournalWriter(self.journal_path, self.metrics_path, flush_interval_s)
        except FileExistsError:
            self.files.discard()
            raise RunStateError(
                f"{self.journal_path} already exists: run id {self.run_id!r} was used before; "
                "start a run with a new run_id (or unset PROV4TORCH_RUN_ID); a torchelastic restart "
                "(TORCHELASTIC_RESTART_COUNT) records a new attempt instead") from None
        except OSError as exc:
            self.files.discard()
            raise ConfigError(f"cannot write to output directory {self.dir}: {exc.strerror or exc}; "
                              f"choose a writable one with out_dir= or {env.DIR}") from exc
        self.appenders = self._writer.appenders  # the hot path calls what the writer lists (and throttles)

    def _start(self, script: Path | None, run_tags: Mapping[str, Any], settings: Any) -> None:
        """The start event, the writer, the context capture, the run's tags and the samplers."""
        start_event = context.start_event(
            time=self.clock(), run_id=self.run_id, run_name=self.run_name, experiment=self.experiment, rank=self.rank,
            world_size=self.world_size, local_rank=self.local_rank, attempt=self.attempt or None,
            previous_attempt=run_activity_id(self.run_id, self.rank, self.attempt - 1) if self.attempt else None,
            region=self.region, purpose=self.purpose, intended_use=self.intended_use,
            policy=self._policy.describe() if self._policy else None)
        self.record_event(start_event, now=True)
        self._writer.start()
        # git, environment and the package list take ~100 ms: gathered off the training thread
        self._context_thread = threading.Thread(
            target=self._capture_context, args=(script,), name="prov4torch-context", daemon=True
        )
        self._context_thread.start()
        for key, value in run_tags.items():
            self.record_event(ev.Tag(key=key, value=value))
        if settings.system_metrics or settings.energy:
            from .. import samplers

            samplers.attach(self, system=settings.system_metrics, energy=settings.energy,
                            interval_s=settings.interval_s, country=settings.country)

    def _capture_context(self, script: Path | None) -> None:
        """Record code, environment and installed packages (the packages list in a sidecar); its rank's, for a
        helper."""
        if self.helper_of is not None:
            return
        try:
            self.record_event(context.capture(script, self.files.packages))
        except Exception as exc:  # noqa: BLE001 - telemetry never kills training
            warn(f"prov4torch: could not capture the environment: {exc}")

    # -- context manager ----------------------------------------------------------------------
    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if self.ended or self.managed:
            return
        if exc is None:
            self.close("FINISHED")
        else:
            self.close_from_exception(exc)

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
        """Record one metric point. No I/O, no device sync, no clock read: the writer thread does the rest."""
        if timestamp is None and type(value) is float and (type(step) is int or step is None):
            try:  # a known series: validated once, its buffer's extend bound here
                self.appenders[context][name]((step, value))
                return
            except (KeyError, TypeError):
                pass
        if type(value) is not float:
            if type(value) is TensorType.cls and value.is_cpu:  # a loss on the CPU: read it here, no more calls
                try:
                    value = float(value.item())
                except (RuntimeError, ValueError, TypeError):  # several elements, complex: coerce_metric says so
                    value = coerce_metric(name, value)
            else:
                value = coerce_metric(name, value)
        try:  # a known series: validated once, its buffer's extend bound here
            append = self.appenders[context][name]
        except (KeyError, TypeError):
            append = self._new_series(name, context)
        if step is not None and type(step) is not int:
            step = check_step(step)
        # no time read here: the writer's marks date the point (``metricbuf``), unless it brings its own
        append((step, value) if timestamp is None else (Stamped(step, check_timestamp(timestamp)), value))

    def log_system_metric(self, name: str, value: float, timestamp: float) -> None:
        """A sampler reading (context ``system``; these names are reserved for the samplers)."""
        append = self._system_series.get(name)
        if append is None:
            self._require_open("log_metric")
            append = self._system_series[name] = self._writer.add_series(name, "system", hot=False)
        append((Stamped(None, timestamp), float(value)))

    def _new_series(self, name: Any, context: Any) -> Callable[[tuple[Any, ...]], None]:
        self._require_open("log_metric")
        if context == "system" and isinstance(name, str) and name.startswith(RESERVED_SYSTEM_PREFIXES):
            raise InvalidValueError(f"metric {name!r} in context 'system' is reserved for prov4torch's samplers; "
                                    "use another name or context", value=name)
        check_name("metric name", name, NAME)
        check_name("metric context", context, CONTEXT)
        if self._helper is not None:  # a forked helper (a DataLoader worker, say) records data uses, not metrics
            drop = self.appenders.setdefault(context, {})[name] = _drop_point
            return drop
        return self._writer.add_series(name, context)  # now in self.appenders, the writer's

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
        ts = _now() if timestamp is None else check_timestamp(timestamp)
        for name, value in metrics.items():
            self.log_metric(name, value, step, context, ts)

    # -- rare calls -------------------------------------------------------------------------
    def _require_open(self, what: str) -> None:
        if not self._open:
            raise RunStateError(f"{what}: run {self.run_id} has ended ({self.status}): start a new run to log more")

    def _record_now(self, event: ev.Event) -> None:
        self.record_event(event, now=True)

    _helper: HelperSink | None = None  # in a forked child: its events go to its helper journal (``helpers``)

    def become_helper(self) -> None:
        """In a forked child of this run's process: record as its helper (see ``record.helpers``)."""
        pid = os.getpid()
        self._helper = HelperSink(helper_journal(self.dir, self.stem, pid))
        self.inputs.after_fork(f"{self.activity}/helper-{pid}")
        self.appenders.clear()  # its metric points are dropped (``_new_series``): the parent's writer is not here

    def record_event(self, event: ev.Event, now: bool = False) -> None:
        """Append an event to the run's history and journal (``now``: written and fsync'd at once)."""
        self._history.append(event)
        if self._helper is not None:  # a forked helper: the parent's writer thread did not survive the fork
            self._helper.write(event)
            return
        if now:
            self._writer.write_event_now(event)
        else:
            self._writer.events.append(event)

    @reads_user_values
    def log_param(self, key: str, value: Any) -> None:
        """Record one hyperparameter; logging a different value for the same key is an error."""
        self._require_open("log_param")
        check_name("parameter name", key, PARAM)
        # an object's own text form (a config's repr) may show what redact could not see
        v = _text_redacted(param_value(key, redact(key, value)))
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
        self.record_event(ev.Param(key=key, value=provjson.value(v)))

    @reads_user_values
    def log_params(self, params: Mapping[str, Any]) -> None:
        if not isinstance(params, Mapping):
            raise InvalidValueError(f"log_params takes a mapping of name -> value, got {type(params).__name__}")
        for key, value in params.items():
            self.log_param(key, value)

    @reads_user_values
    def set_tag(self, key: str, value: Any) -> None:
        """A free-form run tag (may be overwritten)."""
        self._require_open("set_tag")
        check_name("tag name", key, PARAM)
        self.record_event(ev.Tag(key=key, value=provjson.value(_text_redacted(param_value(key, redact(key, value))))))

    @reads_user_values
    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if not isinstance(tags, Mapping):
            raise InvalidValueError(f"set_tags takes a mapping of name -> value, got {type(tags).__name__}")
        for key, value in tags.items():
            self.set_tag(key, value)

    # -- lineage and policy --------------------------------------------------------------------
    def _digest_done(self, event: ev.DatasetDigest) -> None:
        self.inputs.digest_done(event)
        if self._open:
            self.record_event(event)

    def replay(self) -> RunRecord:
        """The run's record so far (its events replayed)."""
        return RunRecord.replay(self._history)

    def adopt_policy(self, spec: Any, mode: str | None) -> None:
        """The script's ``start_run(policy=...)`` joining a managed run (``prov4torch run``): enforced from now on if
        the command line gave none (it was dropped: the script's data trained unchecked); another policy on the
        command line stays the one in force, and a warning says the script's is not."""
        if spec is None:
            return
        if self._policy is None:
            self._policy = RuntimePolicy(spec, mode, self._record_now, self.clock)
            self.inputs.policy = self._policy
            self.inputs.checkpoints.warn_unknown_lineage = True
            # the processes the script starts from now on enforce it too (they read it there: ``autolog.children``)
            os.environ[env.POLICY] = str(self._policy.policy.source or spec)
            os.environ[env.POLICY_MODE] = self._policy.mode
            self.record_event(ev.PolicyAdopted(policy=self._policy.describe(), time=self.clock()), now=True)
            warn(f"prov4torch: the script's policy {self._policy.policy.name!r} is enforced from its start_run, "
                 "and in the processes the script starts from then on (prov4torch run --policy enforces it from the "
                 "first line)")
            return
        if str(spec) not in (self._policy.policy.source, self._policy.policy.name):
            warn(f"prov4torch: the script's start_run(policy={str(spec)!r}) is not in force: this run enforces "
                 f"{self._policy.policy.name!r}, given to prov4torch run")

    def policy_source(self) -> str | None:
        """The policy in force (its file, or a built-in name), for processes this run starts."""
        return self._policy.policy.source if self._policy is not None else None

    def policy_mode(self) -> str | None:
        return self._policy.mode if self._policy is not None else None

    def become_launcher(self) -> None:
        """This process starts the job's ranks instead of being rank 0: its files become ``launcher.*`` and its
        activity the job's launcher, so the rank-0 process it starts records as rank 0."""
        if self.files.stem == "launcher":
            return
        self.flush()
        for old in (self.files.journal, self.files.metrics, self.files.packages):  # (the spool: the writer's)
            with contextlib.suppress(OSError):
                os.replace(old, old.with_name(old.name.replace(self.files.stem, "launcher", 1)))
        self.files = RunFiles(self.root, self.experiment, self.run_id, "launcher")
        self.journal_path, self.metrics_path, self.prov_path = self.files.journal, self.files.metrics, self.files.prov
        self._writer.rename(self.journal_path, self.metrics_path)
        self.record_event(ev.Launcher(), now=True)

    def add_run_attributes(self, attrs: Mapping[str, Any]) -> None:
        """Attributes for the rank activity (qualified names -> values), e.g. sampler summaries."""
        self.record_event(ev.Attrs(attrs=provjson.attributes(attrs)))

    def update_environment(self, info: Mapping[str, Any]) -> None:
        """Add facts to the environment entity (e.g. GPU models found by NVML)."""
        self.record_event(ev.EnvInfo(info=dict(info)))

    _signer: Any = None
    _signer_loaded = False

    def signer(self) -> Any:
        """The key this run signs with (PROV4TORCH_SIGNING_KEY, else the user's default key), loaded once; None
        when there is none. A key that cannot be loaded is one warning, and nothing is signed."""
        if not self._signer_loaded:
            self._signer_loaded = True
            path = keys.signing_key_path()
            if path is not None:
                try:
                    self._signer = keys.load_signer(path)
                except Prov4TorchError as exc:
                    warn(f"prov4torch: {exc}; this run's attestation and lineage cards are not signed")
        return self._signer

    def trusted_keys(self) -> list[Any]:
        """Public keys whose signatures this run trusts: the policy's trusted_keys, PROV4TORCH_TRUSTED_KEYS and
        the user's own key."""
        listed = self._policy.policy.trusted_keys if self._policy is not None else []
        return keys.trusted_keys(listed)

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
            self.requested_status = status  # `prov4torch run` ends it when the script is done, so
            return
        if self.ended:
            raise RunStateError(f"run {self.run_id} has already ended ({self.status})")
        self.close(status)

    requested_status: str | None = None  # what the script asked end_run for, under `prov4torch run`

    def note_signal(self, signum: int) -> None:
        """A signal arrived: the run will end KILLED, whatever ends it."""
        self._pending_signal = signum
        self.record_event(ev.Signal(signal=signum, signal_name=_signal.Signals(signum).name, time=self.clock()),
                          now=True)

    def close_from_exception(self, exc: BaseException) -> None:
        """End the run with the status an escaping exception means (``signals.ending``)."""
        status, details = ending(exc, self._pending_signal)
        self.close(status, **details)

    def close(
        self,
        status: str,
        *,
        exit_code: int | None = None,
        signal_number: int | None = None,
        exception: BaseException | None = None,
    ) -> None:
        """End the run once, whatever asks (end_run, with-block, excepthook, signal, atexit)."""
        if self._helper is not None:  # a forked helper never ends (nor writes) its parent's record
            self.ended, self._open = True, False
            return
        with self._finish_lock:
            if self.ended:
                return
            self.ended = True
            self.closing = True
            try:
                self._close(status, exit_code=exit_code, signal_number=signal_number, exception=exception)
            finally:
                self.closing = False
            if self._hooks is not None:
                self._hooks.after_close()

    closing = False  # inside close(): a signal arriving now waits for the record to be written
    starting = False  # until ``started``: a signal arriving now waits for the run to be whole

    def _close(self, status: str, *, exit_code: int | None, signal_number: int | None,
               exception: BaseException | None) -> None:
        if self._pending_signal is not None and status in ("FINISHED", "FAILED"):
            status, signal_number = "KILLED", self._pending_signal
        elif self._policy is not None and self._policy.blocked and status in ("FINISHED", "FAILED"):
            status = "BLOCKED"
        self._call_end_callbacks()  # samplers: final reading, summaries (run still open)
        if self.helper_of is None and self._import_helpers() and status in ("FINISHED", "FAILED"):
            status = "BLOCKED"  # the policy stopped a use in a process this one started
        self.inputs.datasets.wait(HASH_WAIT_S)
        self.inputs.datasets.close()
        try:
            self.inputs.finish()
        except Exception as exc:  # noqa: BLE001 - never lose the record over the final policy check
            warn(f"prov4torch: the final policy check failed: {exc}")
        gaps = self.inputs.checkpoints.gaps
        if gaps:
            more = f" (and {len(gaps) - 1} more)" if len(gaps) > 1 else ""
            warn(f"prov4torch: checkpoint {gaps[0]}{more} has no recorded training data: no dataset the run read "
                 "could be identified (data held in a generator, read with a reader prov4torch does not watch, or "
                 "from a folder it was not told about); it is marked p4t:lineageGap. Record the data: prov4torch "
                 "run --data DIR, prov4torch.log_dataset(...) or prov4torch.track(loader)")
        self._open = False
        self._context_thread.join(timeout=30)
        self.appenders.clear()  # the hot paths now reach _new_series, which refuses
        self._system_series = {}
        self.status = status
        ident = identity()  # a process group initialised after start_run knows the real world size
        if (ident.rank, ident.world_size) != (self.rank, self.world_size) and self.files.stem != "launcher":
            self.record_event(ev.Identity(world_size=ident.world_size))
        self.record_event(ev.End(
            time=self.clock(), status=status, torch_seed=context.torch_seed(),
            exit_code=128 + int(signal_number) if signal_number is not None else exit_code,
            signal_name=_signal.Signals(signal_number).name if signal_number is not None else None,
            exception=None if exception is None else {
                "type": f"{type(exception).__module__}.{type(exception).__qualname__}",
                "message": redact_text(str(exception))[:2000]}), now=True)
        self._writer.close()
        if self.helper_of is None:  # a helper's journal is its rank's to read
            self.write_document()
            self.attest()
            self.publish()
        elif not any(isinstance(e, (*IMPORTED, ev.Usage)) for e in self._history):
            self.files.discard()  # a helper that used no data (a spawned DataLoader worker, say) leaves no file
        if self._datapaths is not None:
            self._datapaths.remove()
        if self._hooks is not None:
            self._hooks.uninstall()
        with ACTIVE.lock:
            if ACTIVE.run is self:
                ACTIVE.run = None

    def _call_end_callbacks(self) -> None:
        """Each ``on_end`` callback, once (a failure warns: never lose the record over a sampler or a hook)."""
        callbacks, self._end_callbacks = self._end_callbacks, []
        for callback in callbacks:
            try:
                callback(self)
            except Exception as exc:  # noqa: BLE001
                warn(f"prov4torch: end-of-run hook failed: {exc}")

    def discard_helper(self) -> None:
        """A spawned helper run whose process turned out to be a rank (``torch.multiprocessing.spawn``): gone,
        files and hooks (those its end callbacks remove: the framework hooks bound to it), before the rank's run
        starts."""
        self._call_end_callbacks()
        self.ended, self._open = True, False
        self._writer.close()
        if self._datapaths is not None:
            self._datapaths.remove()
        if self._hooks is not None:
            self._hooks.uninstall()
        self.files.discard()
        with ACTIVE.lock:
            if ACTIVE.run is self:
                ACTIVE.run = None

    def _import_helpers(self) -> bool:
        """The datasets, usage and decisions of this rank's helper processes, added to its record; whether the
        policy blocked a use in one of them."""
        found = helper_records(self.dir, self.stem)
        for event in found.events:
            self.record_event(event)
        for (did, role), t in found.usage.items():
            self.count_usage(did, role, t.get("samples", 0), t.get("batches", 0), t.get("epochs", 0), t.get("reads", 0))
        if found.bad_lines:
            self.add_run_attributes({"p4t:journalSkippedLines": found.bad_lines})
        return found.blocked

    record_error: str | None = None  # why the document is incomplete or missing, if it is
    attestation: Path | None = None  # the run's signed attestation, when it has a key

    def publish(self) -> None:
        """A run bound for object storage (``out_dir="s3://..."``): this rank's files uploaded, verified, and
        their local copies dropped; a failure keeps them and warns (never raises). ``prov4torch run`` publishes
        the whole run directory itself, after merging it."""
        if self.remote is None:
            return
        from ..remote import join, publish

        names = [p.name for p in self.dir.glob(f"{self.stem}.*") if p.is_file()]
        if self.world_size == 1 and self.attestation is not None:  # a job's ranks share one (appended) file
            names.append(self.attestation.name)
        done = publish(self.dir, join(self.remote, self.experiment, self.run_id), names)
        if done.failed:
            warn(f"prov4torch: {done.note()}")

    def attest(self) -> Path | None:
        """Sign this rank's checkpoints and PROV document (with the run's key; nothing without one); never raises."""
        signer = self.signer()
        if signer is None or not self.prov_path.is_file():
            return None
        try:
            self.attestation = sign_rank(self.replay(), self.dir, [self.prov_path], signer)
        except (OSError, Prov4TorchError) as exc:
            warn(f"prov4torch: could not sign the run in {self.dir}: {exc}")
        return self.attestation

    def write_document(self) -> dict[str, Any] | None:
        """Build this rank's PROV-JSON and write it atomically; never raises (see ``document.write_rank``)."""
        w = self._writer
        sidecars = {"metrics": Sidecar(self.metrics_path.name, w.csv_sha256, {"points": w.points,
                                                                              "dropped": w.dropped})}
        doc, self.record_error = write_rank(self.replay(), w.stats.values(), sidecars, self.prov_path,
                                            self.journal_path, w.failure)
        if self.record_error:
            warn(f"prov4torch: {self.record_error}")  # warnings-as-errors must not lose the run either
        return doc


def _text_redacted(v: Any) -> Any:
    return redact_text(v) if isinstance(v, str) else v


def _drop_point(_point: tuple[Any, ...]) -> None:
    return None


def _after_fork_in_child() -> None:
    """A forked child of a recording process is a helper of its run (``record.helpers``)."""
    run = ACTIVE.run
    if isinstance(run, Run) and not run.ended:
        try:
            run.become_helper()
        except Exception as exc:  # noqa: BLE001 - a child that cannot be recorded still works
            warn(f"prov4torch: this forked process is not recorded: {exc}")


os.register_at_fork(after_in_child=_after_fork_in_child)
