"""The append-only journal, the metrics sidecar and the writer thread that fills them.

The training thread only appends: metric points to one flat list per series (``metricbuf``: no clock read, no
tuple kept per point) and typed events (``prov4torch.events``) to a deque. A daemon thread drains them about
once a second (and on ``flush``), appends the events to ``rank-K.journal.jsonl`` and the metric points to
``rank-K.metrics.csv`` (through a binary spool while the logging is too fast for CSV text: ``metricbuf``),
fsyncs them, and keeps per-series summaries so ``end_run`` never rereads the CSV.
A process killed with SIGKILL loses at most the last interval; ``recover`` rebuilds
the rest from these files.

The queue is bounded without a cost on the hot path: the hot path calls the append
functions in ``appenders``, plain ``list.extend`` while the writer keeps up. When
``BACKLOG_LIMIT`` points are queued, the writer swaps them for bounded appends:
a series holding ``HIGH_WATER`` points makes the hot path wait for the next drain
(at most ``MAX_WAIT_S``; the GIL is released meanwhile, so the writer catches up);
if the writer is still behind after that, new points are dropped and counted
(``p4t:pointsDropped``) until its next drain, and a warning says so once. Nothing
queued is ever dropped. The bounded appends (a Python call per point) are swapped back for
plain ones as soon as a drain has caught up quickly (under ``POLL_S / 2``): a fast loop that
the writer keeps up with (it polls every 10 ms while the backlog is large) is not slowed, and
its queue stays near what it logs in that time; a writer that drains slowly (a slow disk)
keeps the hot path bounded.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import itertools
import json
import math
import os
import signal
import stat
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ..errors import ChangedTensor, JournalError, MalformedEventError, NotRegularFile
from ..events import Event, decode, encode
from ..safefs import CLOEXEC, NOFOLLOW, file_sha256, open_new, open_regular
from ..warn import warn
from .metricbuf import POLL_S, QUIET_POINTS, SPOOL_LIMIT, Chunk, Series, Spool, pack, read_spool, rows
from .values import DeviceValue

METRICS_HEADER = "name,context,step,timestamp,value\n"  # timestamp: Unix epoch milliseconds
BACKLOG_LIMIT = 50_000  # points queued before the writer drains early
HIGH_WATER = 150_000  # points queued in one series: the hot path waits for the writer (~20 MB)
MAX_WAIT_S = 1.0  # the longest the hot path waits; if the writer is still behind, new points are dropped (counted)



@dataclass
class SeriesStats:
    """Summary of one metric series (one name in one context)."""

    name: str
    context: str
    count: int = 0
    first: float | None = None
    last: float | None = None
    min: float | None = None
    max: float | None = None
    first_step: int | None = None
    last_step: int | None = None
    last_time: float | None = None
    non_finite: int = 0
    _sum: float = field(default=0.0, repr=False)
    _finite: int = field(default=0, repr=False)

    def add_many(self, steps: list[int], times: list[float], values: list[float]) -> None:
        """Fold a chunk of points (in logging order) into the summary, at C speed.

        Only the first and last of ``times`` are read.
        """
        n = len(values)
        if not n:
            return
        if self.count == 0:
            self.first, self.first_step = values[0], steps[0]
        self.count += n
        self.last, self.last_step, self.last_time = values[-1], steps[-1], times[-1]
        finite = [v for v in values if v - v == 0.0]  # drops NaN and +-inf
        self.non_finite += n - len(finite)
        if finite:
            self._finite += len(finite)
            self._sum += math.fsum(finite)
            lo, hi = min(finite), max(finite)
            self.min = lo if self.min is None else min(self.min, lo)
            self.max = hi if self.max is None else max(self.max, hi)

    @property
    def mean(self) -> float | None:
        return self._sum / self._finite if self._finite else None


def to_floats(values: list[Any]) -> list[float]:
    """Convert a batch of metric values to floats with a few device calls per batch, not per value: the tensors of
    one device are stacked (by dtype and shape, so an int64 count is never rounded through a bf16 loss) and copied
    once. A handful of calls matters: each torch call releases and retakes the GIL, and the training thread pays
    for every hand-over."""
    tensors = [i for i, v in enumerate(values) if type(v) is not float]
    if not tensors:
        return values
    out = list(values)
    torch = sys.modules.get("torch")
    groups: dict[Any, dict[tuple[Any, Any], list[tuple[int, Any]]]] = {}  # device -> (dtype, shape) -> (i, tensor)
    streams: dict[Any, dict[Any, None]] = {}  # CUDA device -> the streams its copies were made on
    changed = []
    for i in tensors:
        v = values[i]
        if isinstance(v, DeviceValue):
            if v.version is not None and v.tensor._version != v.version:
                changed.append(i)
                continue
            if v.stream is not None:
                streams.setdefault(v.tensor.device, {})[v.stream] = None
            v = v.tensor
        if torch is not None and isinstance(v, torch.Tensor):
            groups.setdefault(v.device, {}).setdefault((v.dtype, v.shape), []).append((i, v))
        else:
            out[i] = float(v)
    for device, by_kind in groups.items():
        order = [i for members in by_kind.values() for i, _ in members]
        parts = [[t for _, t in members] for members in by_kind.values()]
        for i, f in zip(order, _read(torch, device, parts, list(streams.get(device, ()))), strict=True):
            out[i] = float(f)
    if changed:  # the others are read: a batch that fails is read again point by point (``JournalWriter._floats``)
        raise ChangedTensor(f"a logged tensor was written to in place before it was read (version "
                            f"{values[changed[0]].version} -> {values[changed[0]].tensor._version}); log a copy "
                            "(t.detach().clone()) or a number (t.item()) when the tensor changes after the call")
    return out


_SIDE_STREAMS: dict[Any, Any] = {}  # CUDA device -> the writer's own stream on it


def _read(torch: Any, device: Any, parts: list[list[Any]], streams: list[Any]) -> list[float]:
    """The values of one device's tensors as floats, in the order of ``parts``. On CUDA: on the writer's own stream,
    after an event recorded now on each stream the copies were made on (so after the copies, whatever stream made
    them), into pinned memory, and waited for with an event: no synchronising call, so a script running under
    ``torch.cuda.set_sync_debug_mode("error")`` is not disturbed."""

    def flat() -> Any:
        pieces = [torch.stack(ts).reshape(-1).double() for ts in parts]
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces)

    if device.type != "cuda":
        return list(flat().cpu().tolist())
    side = _SIDE_STREAMS.get(device)
    if side is None:
        side = _SIDE_STREAMS[device] = torch.cuda.Stream(device=device)
    with torch.cuda.stream(side):
        for s in streams:
            side.wait_stream(s)  # an event recorded on s now, after every copy taken in this batch
        values = flat()
        host = torch.empty(values.shape, dtype=torch.float64, pin_memory=True)
        host.copy_(values, non_blocking=True)
        done = torch.cuda.Event()
        done.record(side)
    done.synchronize()  # this thread waits (the GIL released); the copies are freed only after it
    return list(host.tolist())


class JournalWriter:
    """Owns the rank's journal and metrics files and the thread that writes them."""

    def __init__(self, journal_path: Path, metrics_path: Path, interval_s: float = 1.0) -> None:
        self.journal_path = journal_path
        self.metrics_path = metrics_path
        self.interval_s = interval_s
        self.series: dict[tuple[str, str], Series] = {}
        self._sids = itertools.count()  # each series' number in the spool (``metricbuf``)
        # context -> name -> the function the hot path calls for that series (see the module docstring)
        self.appenders: dict[str, dict[str, Callable[[tuple[Any, Any]], None]]] = {}
        self._room = threading.Event()  # set by each drain: a full queue has room again
        self._bounded = False  # the hot path's appends are the bounded ones
        self._shedding = False  # the writer stayed behind: new points are dropped until the next drain
        self._conversion_warned = False
        self.waits = 0  # times the hot path waited for the writer
        self.events: deque[Event] = deque()
        self.stats: dict[tuple[str, str], SeriesStats] = {}
        self.points = 0
        self._csv_hash = hashlib.sha256()
        # reentrant: a signal handler runs on the main thread wherever it is, inside flush() too, and records the
        # signal (a flush) and may end the run (close) there; with a plain lock it waited on itself forever
        self._lock = threading.RLock()
        self._owner: int | None = None  # the thread holding the lock (``_held``): close never joins a writer it blocks
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.failure: str | None = None  # the first write error (the journal is incomplete after it)
        self.dropped = 0  # metric points that could not be written
        self._journal: IO[str] = open_new(journal_path)
        try:
            self._csv: IO[bytes] = open_new(metrics_path, binary=True)
        except BaseException:
            self._journal.close()
            journal_path.unlink()
            raise
        header = METRICS_HEADER.encode()
        self._csv.write(header)
        self._csv_hash.update(header)
        self._csv_length = len(header)
        self._spool = Spool(spool_path(metrics_path), functools.partial(open_new, binary=True))

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="prov4torch-writer", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        last = time.monotonic()
        wait = min(POLL_S, self.interval_s)
        while not self._stop.wait(wait):
            with self._lock:
                now = time.time()  # read before each series' count (``Series.mark``)
                for s in list(self.series.values()):
                    s.mark(now)
            backlog = self.backlog()
            if backlog >= BACKLOG_LIMIT and not self._bounded:  # while this drain lasts, the hot path is bounded
                self._bound(True)
            due = time.monotonic() - last >= self.interval_s
            took = 0.0
            if due or backlog >= BACKLOG_LIMIT:
                began = time.monotonic()
                self.flush(rows=False, sync=due)
                took = time.monotonic() - began
                if due:
                    last = time.monotonic()
            # caught up, and draining fast (a slow disk keeps the bound on): plain appends again
            if self._bounded and took < POLL_S / 2 and self.backlog() < BACKLOG_LIMIT:
                self._bound(False)
            # a fast loop: drain again soon, so the queue stays short without slowing the hot path
            wait = POLL_S / 10 if backlog >= BACKLOG_LIMIT else min(POLL_S, self.interval_s)

    def _bound(self, on: bool) -> None:
        """Swap the hot path's appends for bounded ones (``on``) or back to plain ``list.extend``."""
        self._bounded = on
        for (name, context), s in list(self.series.items()):
            per_context = self.appenders.get(context)
            if per_context is not None and name in per_context:
                per_context[name] = self._bounded_append(s) if on else s.buf.extend

    def _bounded_append(self, series: Series) -> Callable[[tuple[Any, Any]], None]:
        extend, buf, room, high = series.buf.extend, series.buf, self._room, 2 * HIGH_WATER

        def append_bounded(point: tuple[Any, Any]) -> None:
            if len(buf) < high:
                extend(point)
                return
            if not self._shedding:
                self.waits += 1
                room.clear()
                if room.wait(MAX_WAIT_S) and len(buf) < high:  # the writer drained meanwhile
                    extend(point)
                    return
                self._shedding = True
                warn(f"prov4torch: the metric writer is more than {MAX_WAIT_S:g} s behind; points are dropped (and "
                     "counted) until it catches up")
            self.dropped += 1

        return append_bounded

    def write_event_now(self, event: Event) -> None:
        """Append one event and fsync, bypassing the queue (start/end/signal records)."""
        self.events.append(event)
        self.flush(rows=False)

    def flush(self, rows: bool = True, sync: bool = True) -> None:
        """Drain both queues to disk and fsync. Safe from any thread, and from a signal handler that interrupted
        a flush on the same thread (it writes what the interrupted one had not taken yet); never raises.
        ``rows``: every point becomes a CSV row now; else only when the logging is quiet (``metricbuf``).
        ``sync``: fsync (the writer's drains between its intervals only write: a SIGKILL loses nothing written)."""
        with self._held(), _signals_held():
            self._flush_locked(rows, sync)

    @contextlib.contextmanager
    def _held(self) -> Iterator[None]:
        """The lock, its holder noted: a signal handler that interrupts this thread here and ends the run must not
        wait for the writer thread, which may be waiting for this very lock."""
        with self._lock:
            outer, self._owner = self._owner, threading.get_ident()
            try:
                yield
            finally:
                self._owner = outer

    def _flush_locked(self, rows: bool, sync: bool) -> None:
        if self._journal.closed:
            return
        try:
            self._drain_events()
            taken = self._drain_metrics()
            if rows or sum(len(c) for c in taken) < QUIET_POINTS or self._spool.points >= SPOOL_LIMIT:
                self._write_rows(self._spool.take() + taken)
                self._csv.flush()
                if sync or self._spool.active:
                    os.fsync(self._csv.fileno())
                self._spool.done()
            else:
                self._spool.add(taken, self._csv_length)
                self._spool.flush(sync)
            self._journal.flush()
            if sync:
                os.fsync(self._journal.fileno())
            if os.fstat(self._journal.fileno()).st_nlink == 0:
                raise FileNotFoundError(f"{self.journal_path} was deleted (the run directory was removed?)")
        except Exception as exc:  # noqa: BLE001 - telemetry never kills training
            if self._journal.closed:
                return  # a signal handler closed the files while this flush was interrupted: it wrote them
            if self.failure is None:
                self.failure = f"{type(exc).__name__}: {exc}"
                warn(f"prov4torch could not write {self.journal_path.parent}: {self.failure}; provenance for this "
                     "run may be incomplete (training goes on)")  # never raises: the writer goes on

    def close(self) -> None:
        """Stop the thread, write everything left, close the files."""
        self._stop.set()
        me = threading.get_ident()
        if self._thread is not None and self._thread is not threading.current_thread() and self._owner != me:
            self._thread.join(timeout=30)  # (not while this thread holds the lock the writer may be waiting on)
        self.flush()
        with self._held():
            self._spool.close()
            for fh in (self._journal, self._csv):
                try:
                    fh.close()
                except OSError as exc:  # data still buffered when the disk is full: already warned about
                    self.failure = self.failure or f"{type(exc).__name__}: {exc}"

    def rename(self, journal_path: Path, metrics_path: Path) -> None:
        """The files were moved (``Run.become_launcher``): write on under the new names."""
        with self._held():
            self.journal_path, self.metrics_path = journal_path, metrics_path
            self._spool.rename(spool_path(metrics_path))

    @property
    def csv_sha256(self) -> str:
        return self._csv_hash.hexdigest()

    # -- draining --------------------------------------------------------------
    def _drain_events(self) -> None:
        events = self.events
        lines = []
        for _ in range(len(events)):
            lines.append(json.dumps(encode(events.popleft()), allow_nan=False, default=str))
        if lines:
            self._journal.write("\n".join(lines) + "\n")

    def _floats(self, values: list[Any]) -> list[float | None]:
        """Values as floats, tensors read a few device calls per batch (``to_floats``); a batch that fails is read
        point by point, and a value that cannot be read at all is None (dropped, with one warning)."""
        try:
            return list(to_floats(values))
        except Exception:  # noqa: BLE001 - one bad tensor must not cost the others
            out: list[float | None] = []
            for v in values:
                try:
                    out.append(to_floats([v])[0])
                except Exception as exc:  # noqa: BLE001
                    out.append(None)
                    if not self._conversion_warned:
                        self._conversion_warned = True
                        warn(f"prov4torch: a metric value could not be read ({type(exc).__name__}: {exc}); such "
                             "points are dropped and counted")
            return out

    def add_series(self, name: str, context: str, hot: bool = True) -> Callable[[tuple[Any, Any]], None]:
        """A new series' buffer and its append (``(step, value)``, or ``(Stamped(step, time), value)``); ``hot``:
        listed in ``appenders`` for the hot path (and throttled with it; the samplers' own series are not)."""
        # no lock: a signal handler that interrupted this (the main thread) and ends the run would otherwise wait for
        # a sampler thread waiting for that lock to add its own series; ``setdefault`` is atomic, and two threads
        # adding one series get the same
        s = self.series.setdefault((name, context), Series((name, context), next(self._sids), time.time()))
        append = self._bounded_append(s) if hot and self._bounded else s.buf.extend
        if hot:
            self.appenders.setdefault(context, {})[name] = append
        return append

    def backlog(self) -> int:
        return sum(len(s) for s in list(self.series.values()))

    def _drain_metrics(self) -> list[Chunk]:
        """Every series' points, as chunks (``metricbuf.pack``: one C call, unless a point needs resolving)."""
        chunks = []
        now = time.time()  # read before each series' length (``Series.take``)
        for s in list(self.series.values()):
            got = s.take(now)
            if got is None:
                continue
            chunk, dropped = pack(s, *got, self._floats)
            self.dropped += dropped
            if chunk is not None:
                chunks.append(chunk)
        self._shedding = False  # the queues have room again: a waiting hot path goes on
        self._room.set()
        return chunks

    def _write_rows(self, chunks: list[Chunk]) -> None:
        """The chunks' CSV rows, appended, and their series' summaries."""
        parts = []
        for chunk in chunks:
            data, steps, ends, values = rows(chunk)
            key = chunk.series.key
            s = self.stats.get(key)
            if s is None:
                s = self.stats[key] = SeriesStats(*key)
            s.add_many(steps, ends, values)
            parts.append(data)
            self.points += len(steps)
        if parts:
            data = b"".join(parts)
            self._csv.write(data)
            self._csv_hash.update(data)
            self._csv_length += len(data)


_HELD = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGALRM")
              if hasattr(signal, n))


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """On the main thread, the signals a Python handler may catch wait until a flush is done: a handler that ends
    the run (and so flushes) inside a flush would otherwise write a series' later points before its earlier."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def spool_path(metrics_path: Path) -> Path:
    return metrics_path.with_name(metrics_path.name.removesuffix(".csv") + ".spool")


def finish_spool(metrics_path: Path) -> int:
    """Rows a killed run left in its spool (``metricbuf``), written to its CSV; the points written."""
    spool = spool_path(metrics_path)
    try:
        fh = open_regular(spool)
    except FileNotFoundError:
        return 0
    with fh:
        found = read_spool(fh)
        if found is None:
            return 0
        length, chunks = found
        fd = os.open(metrics_path, os.O_RDWR | os.O_CREAT | os.O_NONBLOCK | NOFOLLOW | CLOEXEC, 0o666)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise NotRegularFile(f"{metrics_path} is not a regular file: not written")
            size = os.fstat(fd).st_size
            header = METRICS_HEADER.encode()
            os.ftruncate(fd, min(max(length, len(header)), size))
            os.lseek(fd, 0, os.SEEK_END)
            if size == 0:
                os.write(fd, header)
            points = 0
            for chunk, flat in chunks:
                data, steps, _ends, _values = rows(chunk, flat)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                points += len(steps)
            os.fsync(fd)
        finally:
            os.close(fd)
    spool.unlink()
    return points


# -- readers (recover, tests) ------------------------------------------------------

def read_journal(path: Path) -> tuple[list[Event], int]:
    """The events of a journal and the number of lines that are not one (``events.decode`` refused them).

    A torn last line (the process died mid-write) is expected and counted like any other line that is not
    a JSON object of a known kind and shape: the caller reports the count, nothing passes silently.
    """
    events: list[Event] = []
    bad = 0
    try:
        with io.TextIOWrapper(open_regular(path), encoding="utf-8", errors="replace") as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                try:
                    events.append(decode(json.loads(line)))
                except (ValueError, RecursionError, MalformedEventError):
                    bad += 1
    except OSError as exc:
        raise JournalError(f"cannot read journal {path}: {exc.strerror or exc}") from exc
    return events, bad


def iter_metrics(path: Path) -> Iterator[tuple[str, str, int, float, float]]:
    """Rows of a metrics CSV (timestamps back in seconds); torn or malformed lines are skipped."""
    with io.TextIOWrapper(open_regular(path), encoding="utf-8", errors="replace") as fh:
        header = fh.readline()
        if header != METRICS_HEADER:
            return
        for line in fh:
            if not line.endswith("\n"):
                return  # torn last line
            parts = line.rstrip("\n").split(",")
            if len(parts) != 5:
                continue
            try:
                yield parts[0], parts[1], int(parts[2]), int(parts[3]) / 1000.0, float(parts[4])
            except ValueError:
                continue


def summarize_metrics(path: Path) -> tuple[dict[tuple[str, str], SeriesStats], str, int]:
    """Per-series summaries, the file's sha256 and the number of points, read from a CSV."""
    columns: dict[tuple[str, str], tuple[list[int], list[float], list[float]]] = {}
    points = 0
    if path.exists():
        for name, context, step, ts, v in iter_metrics(path):
            cols = columns.get((name, context))
            if cols is None:
                cols = columns[(name, context)] = ([], [], [])
            cols[0].append(step)
            cols[1].append(ts)
            cols[2].append(v)
            points += 1
    stats = {}
    for key, (steps, times, values) in columns.items():
        stats[key] = SeriesStats(*key)
        stats[key].add_many(steps, times, values)
    return stats, file_sha256(path) if path.exists() else "", points


def series_sorted(stats: Iterable[SeriesStats]) -> list[SeriesStats]:
    return sorted(stats, key=lambda s: (s.context, s.name))
