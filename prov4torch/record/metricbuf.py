"""Metric points as columns: the hot path's buffer, the writer's chunks, their spool file and their CSV rows.

**The hot path** appends two objects per point to one flat list per series (``list.extend((step, value))``: no
tuple kept per point, no clock read). A point logged without a timestamp gets its time from the writer's
**marks**: about every ``POLL_S`` (0.1 s) the writer notes, per series, how many points had been appended and
when. A point between two marks was logged between their times; it is given a time by its position between them
(evenly spaced, the last one at the later mark), so **every point's timestamp is within the writer's poll
interval (0.1 s) of the call**, and a series' times never go backwards. A point logged with a timestamp keeps it
(``Stamped`` in the step slot), and ``log_metrics`` gives all its points the same one.

**The writer** takes each series' points in bulk (``buf[:n]``, ``del buf[:n]``: two C calls, whatever ``n``) and
makes a ``Chunk`` of binary columns (``array('q')`` steps, ``array('d')`` values: C conversions). Only a chunk
that needs it — a step left to count on, an explicit timestamp, a tensor still on its device, a value that
cannot be read — is resolved point by point. Turning numbers into CSV text (``repr`` of each float, ~0.5 µs a
point) is the one costly part: it happens when the logging is quiet; while a loop logs faster than
``QUIET_POINTS`` a second the chunks go to a **spool file** beside the CSV (``rank-K.metrics.spool``, binary,
fsync'd like the journal) and become CSV rows at the next quiet moment, at ``flush()`` and at the run's end.
So the text's cost never competes with a fast loop for the GIL, and a SIGKILL loses no more than before:
``recover`` turns a spool left behind into the rows it holds.

The spool starts with the CSV's length when it was begun: rows written from it before a crash are cut off
again and rewritten from the spool, so a row is never written twice.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import struct
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

POLL_S = 0.1  # the writer's marks: a point's time is within this of its call
QUIET_POINTS = 20_000  # a drain taking fewer points than this is quiet: CSV text is written then
SPOOL_LIMIT = 1_000_000  # points waiting in the spool: past this they become CSV text whatever the rate

SPOOL_MAGIC = b"P4TSPOOL"
_SERIES, _CHUNK = b"P4TS", b"P4TC"
_HEAD = struct.Struct("<q")  # the CSV's length when the spool was begun
_SERIES_HEAD = struct.Struct("<II")  # series id, length of "name,context"
_CHUNK_HEAD = struct.Struct("<IqqII")  # series id, index of its first point, points, marks, explicit times (0/1)
_MARK = struct.Struct("<qd")


class Stamped:
    """The step slot of a point logged with its own timestamp."""

    __slots__ = ("step", "time")

    def __init__(self, step: int | None, time: float) -> None:
        self.step, self.time = step, time


class Series:
    """One series' hot-path buffer and the writer's state for it."""

    __slots__ = ("base", "buf", "key", "marks", "next_step", "sid")

    def __init__(self, key: tuple[str, str], sid: int, now: float) -> None:
        self.key = key
        self.sid = sid
        self.buf: list[Any] = []  # step, value, step, value, ... (appended by the hot path only)
        self.base = 0  # points taken from buf so far: the index of buf[0]'s point
        self.marks: list[tuple[int, float]] = [(0, now)]  # (points appended, time); the first is a lower bound
        self.next_step = 0  # the step of a point logged without one

    def __len__(self) -> int:
        return len(self.buf) // 2

    def mark(self, now: float) -> None:
        """Note how many points were appended by ``now`` (read before the length: see the module docstring)."""
        count = self.base + len(self.buf) // 2
        if self.marks[-1][0] == count:
            self.marks[-1] = (count, now)  # nothing new: a tighter lower bound for the next points
        else:
            self.marks.append((count, now))

    def take(self, now: float) -> tuple[list[Any], int, list[tuple[int, float]]] | None:
        """The points appended so far (flat), the index of the first, and the marks that bound their times."""
        buf = self.buf
        n2 = len(buf)
        if not n2:
            self.mark(now)
            return None
        flat = buf[:n2]
        del buf[:n2]  # the hot path only appends: what it adds meanwhile stays
        first = self.base
        self.base += n2 // 2
        marks = self.marks
        marks.append((self.base, now))
        self.marks = [(self.base, now)]
        return flat, first, marks


@dataclass(slots=True)
class Chunk:
    """Points of one series, resolved: steps and values; times explicit, or from ``marks`` by position."""

    series: Series
    steps: array[int]
    values: array[float]
    first: int = 0  # the index of the first point (what marks count)
    marks: list[tuple[int, float]] | None = None
    times: array[float] | None = None

    def __len__(self) -> int:
        return len(self.steps)

    def point_times(self) -> list[float]:
        if self.times is not None:
            return list(self.times)
        return interpolate(self.marks or [], self.first, len(self.steps))


def interpolate(marks: list[tuple[int, float]], first: int, n: int) -> list[float]:
    """Times of points ``first .. first+n-1``: between the marks around each, evenly, the last at the later mark."""
    out: list[float] = []
    end = first + n
    for (c0, t0), (c1, t1) in itertools.pairwise(marks):
        lo, hi = max(c0, first), min(c1, end)
        if hi > lo:
            step = (t1 - t0) / (c1 - c0)
            out.extend([t0 + step * (i - c0 + 1) for i in range(lo, hi)])
    if len(out) < n:  # marks that do not cover every point (never from the writer): the last known time
        out.extend([marks[-1][1] if marks else 0.0] * (n - len(out)))
    return out


def fast_chunk(series: Series, flat: list[Any], first: int, marks: list[tuple[int, float]]) -> Chunk | None:
    """The chunk of points that need nothing resolved (int steps, float values), or None."""
    try:
        steps = array("q", flat[0::2])
        values = array("d", flat[1::2])  # only floats reach here unresolved (see Run.log_metric)
    except (TypeError, OverflowError, ValueError):
        return None
    except Exception:  # noqa: BLE001 - a value whose __float__ fails: resolved point by point
        return None
    if steps:
        series.next_step = steps[-1] + 1
    return Chunk(series, steps, values, first, marks)


def resolve(series: Series, flat: list[Any], first: int, marks: list[tuple[int, float]],
            floats: Callable[[list[Any]], list[float | None]]) -> tuple[Chunk | None, int]:
    """Point by point: steps left to count on, explicit times, values read with ``floats`` (None: unreadable,
    dropped). The chunk of what was kept and the number dropped."""
    times = interpolate(marks, first, len(flat) // 2)
    values = floats(flat[1::2])
    steps_out, values_out, times_out = array("q"), array("d"), array("d")
    dropped = 0
    nxt = series.next_step
    for i, slot in enumerate(flat[0::2]):
        given, when = (slot.step, slot.time) if isinstance(slot, Stamped) else (slot, times[i])
        step: int = nxt if given is None else given
        nxt = step + 1
        value = values[i]
        if value is None or not -(2**63) <= step < 2**63:
            dropped += 1
            continue
        steps_out.append(step)
        values_out.append(value)
        times_out.append(when)
    series.next_step = nxt
    if not steps_out:
        return None, dropped
    return Chunk(series, steps_out, values_out, times=times_out), dropped


def rows(chunk: Chunk) -> tuple[bytes, list[int], list[float], list[float]]:
    """The chunk's CSV rows, and its steps, times (first and last) and values for the series' summary."""
    steps, values, times = chunk.steps.tolist(), chunk.values.tolist(), chunk.point_times()
    name, context = chunk.series.key
    prefix = f"{name},{context},"
    # one f-string per row measured fastest (csv.writerows was 2x slower); names never need quoting
    data = "".join([f"{prefix}{st},{int(t * 1000.0)},{v!r}\n" for st, t, v in zip(steps, times, values,
                                                                                   strict=True)]).encode()
    # times as the CSV keeps them (milliseconds), so a recovered document says the same
    ends = [int(times[0] * 1000.0) / 1000.0, int(times[-1] * 1000.0) / 1000.0]
    return data, steps, ends, values


# -- the spool ---------------------------------------------------------------------------------

class Spool:
    """Chunks waiting for their CSV rows, on disk (fsync'd) and in memory."""

    def __init__(self, path: Path, opener: Callable[[Path], IO[bytes]]) -> None:
        self.path = path
        self.opener = opener
        self.chunks: list[Chunk] = []
        self.points = 0
        self._fh: IO[bytes] | None = None
        self._named: set[int] = set()

    def add(self, chunk: Chunk, csv_length: int) -> None:
        if self._fh is None:
            self._fh = self.opener(self.path)
            self._fh.write(SPOOL_MAGIC + _HEAD.pack(csv_length))
            self._named = set()
        s = chunk.series
        if s.sid not in self._named:
            key = f"{s.key[0]},{s.key[1]}".encode()
            self._fh.write(_SERIES + _SERIES_HEAD.pack(s.sid, len(key)) + key)
            self._named.add(s.sid)
        marks = chunk.marks or []
        self._fh.write(_CHUNK + _CHUNK_HEAD.pack(s.sid, chunk.first, len(chunk), len(marks),
                                                         chunk.times is not None))
        self._fh.write(b"".join(_MARK.pack(c, t) for c, t in marks))
        self._fh.write(chunk.steps.tobytes() + chunk.values.tobytes())
        if chunk.times is not None:
            self._fh.write(chunk.times.tobytes())
        self.chunks.append(chunk)
        self.points += len(chunk)

    def sync(self) -> None:
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def take(self) -> list[Chunk]:
        out, self.chunks, self.points = self.chunks, [], 0
        return out

    def done(self) -> None:
        """Every chunk's rows are in the CSV, fsync'd: the spool is not needed any more."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    def rename(self, path: Path) -> None:
        if self._fh is not None:
            os.replace(self.path, path)
        self.path = path

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def read_spool(fh: IO[bytes]) -> tuple[int, Iterator[Chunk]] | None:
    """The CSV length a spool was begun at and its chunks (a torn tail ends them); None if not a spool."""
    head = fh.read(len(SPOOL_MAGIC) + _HEAD.size)
    if len(head) < len(SPOOL_MAGIC) + _HEAD.size or not head.startswith(SPOOL_MAGIC):
        return None
    (csv_length,) = _HEAD.unpack_from(head, len(SPOOL_MAGIC))

    def exact(n: int) -> bytes:
        data = fh.read(n)
        if len(data) != n:
            raise EOFError
        return data

    def chunks() -> Iterator[Chunk]:
        series: dict[int, Series] = {}
        while True:
            try:
                kind = exact(4)
                if kind == _SERIES:
                    sid, length = _SERIES_HEAD.unpack(exact(_SERIES_HEAD.size))
                    name, _, context = exact(length).decode("utf-8", "replace").partition(",")
                    series[sid] = Series((name, context), sid, 0.0)
                    continue
                if kind != _CHUNK:
                    return
                sid, first, n, nmarks, timed = _CHUNK_HEAD.unpack(exact(_CHUNK_HEAD.size))
                marks = [_MARK.unpack_from(exact(_MARK.size)) for _ in range(nmarks)]
                steps, values = array("q"), array("d")
                steps.frombytes(exact(8 * n))
                values.frombytes(exact(8 * n))
                times = None
                if timed:
                    times = array("d")
                    times.frombytes(exact(8 * n))
                if sid not in series or not n:
                    return
                yield Chunk(series[sid], steps, values, first, marks or None, times)
            except (EOFError, struct.error, ValueError):
                return

    return csv_length, chunks()

