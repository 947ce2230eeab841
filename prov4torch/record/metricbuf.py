"""Metric points as columns: the hot path's buffer, the writer's chunks, their spool file and their CSV rows.

**The hot path** appends two objects per point to one flat list per series (``list.extend((step, value))``: no
tuple kept per point, no clock read). A point logged without a timestamp is dated by the writer's **marks**:
about every ``POLL_S`` (0.1 s; every 10 ms while a loop logs fast) the writer notes, per series, how many points
have been appended and when, and each point takes the time of the first mark after it — the writer's first look
after the call. So **a point's timestamp is never before its call and at most the poll interval (0.1 s) after
it** (later only if the writer thread cannot run, e.g. while a C call holds the GIL); points logged between two
looks share one time and keep their order and steps. A point logged with a timestamp keeps it (``Stamped`` in
the step slot), and ``log_metrics`` gives all its points the same one.

**The writer** takes each series' points in bulk (``buf[:n]``, ``del buf[:n]``) and marshals them (``pack``):
three C calls per series and drain, whatever ``n``. Only a chunk that needs it — an explicit timestamp, a tensor
still on its device, a value that cannot be read — is resolved point by point. Turning numbers into CSV text
(``repr`` of each float, ~0.5 µs a point) is the one costly part: it happens when the logging is quiet (a drain
of fewer than ``QUIET_POINTS``), at ``flush()`` and at the run's end; while a loop logs faster, the chunks go to
a **spool file** beside the CSV (``rank-K.metrics.spool``) and wait there, up to ``SPOOL_LIMIT`` points. So the
text's cost does not compete with a fast loop for the GIL — it is paid at the next quiet moment — and a SIGKILL
loses no more than before: ``recover`` turns a spool left behind into the rows it holds, parsing it itself
(``flat_points``: ints, None and floats only), never with ``marshal``. Steps left to count on are counted when
the rows are made, in order.

The spool starts with the CSV's length when it was begun: rows written from it before a crash are cut off
again and rewritten from the spool, so a row is never written twice.
"""

from __future__ import annotations

import contextlib
import itertools
import marshal
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
_CHUNK_HEAD = struct.Struct("<IqqIqI")  # series id, index of the first point, points, marks, bytes, times (0/1)
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
        # (points appended, time): a point takes the time of the first mark past its index; the first mark is
        # where the next points start counting (its time is used only if no mark follows, never from the writer)
        self.marks: list[tuple[int, float]] = [(0, now)]
        self.next_step = 0  # the step of a point logged without one

    def __len__(self) -> int:
        return len(self.buf) // 2

    def mark(self, now: float) -> None:
        """Note how many points were appended by ``now`` (read before the length: see the module docstring)."""
        count = self.base + len(self.buf) // 2
        if self.marks[-1][0] != count:
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
    """Points of one series: ``flat`` (step, value, ...; marshalled, as the spool keeps them), and their times,
    explicit (``times``) or from ``marks`` by position. Steps may be None (counted on when the rows are made)."""

    series: Series
    blob: bytes  # marshal of the flat list (format 2: no references)
    points: int
    first: int = 0  # the index of the first point (what marks count)
    marks: list[tuple[int, float]] | None = None
    times: list[float] | None = None

    def __len__(self) -> int:
        return self.points

    def point_times(self) -> list[float]:
        if self.times is not None:
            return self.times
        return mark_times(self.marks or [], self.first, self.points)


def mark_times(marks: list[tuple[int, float]], first: int, n: int) -> list[float]:
    """Times of points ``first .. first+n-1``: each the time of the first mark after it (the writer's first look
    after the call: never before it, normally at most ``POLL_S`` after)."""
    out: list[float] = []
    end = first + n
    for (c0, _t0), (c1, t1) in itertools.pairwise(marks):
        lo, hi = max(c0, first), min(c1, end)
        if hi > lo:
            out.extend([t1] * (hi - lo))
    if len(out) < n:  # marks that do not cover every point (never from the writer): the last known time
        out.extend([marks[-1][1] if marks else 0.0] * (n - len(out)))
    return out


def pack(series: Series, flat: list[Any], first: int, marks: list[tuple[int, float]],
         floats: Callable[[list[Any]], list[float | None]]) -> tuple[Chunk | None, int]:
    """The chunk of points taken from ``series``, and how many were dropped. Points as the hot path gives them
    (int or None steps, float values) are marshalled as they are: one C call. Others — an explicit timestamp, a
    tensor, a value that cannot be read (``floats`` gives None: dropped) — are resolved point by point first."""
    n = len(flat) // 2
    try:
        return Chunk(series, marshal.dumps(flat, 2), n, first, marks), 0
    except ValueError:  # something marshal does not write: a Stamped step, a tensor
        pass
    times = mark_times(marks, first, n)
    values = floats(flat[1::2])
    out: list[Any] = []
    kept: list[float] = []
    for i, slot in enumerate(flat[0::2]):
        value = values[i]
        if value is None:
            continue
        step, when = (slot.step, slot.time) if isinstance(slot, Stamped) else (slot, times[i])
        out += (step, value)
        kept.append(when)
    if not kept:
        return None, n
    return Chunk(series, marshal.dumps(out, 2), len(kept), times=kept), n - len(kept)


def rows(chunk: Chunk, flat: list[Any] | None = None) -> tuple[bytes, list[int], list[float], list[float]]:
    """The chunk's CSV rows, and its steps, times (first and last) and values for the series' summary. Steps left
    to count on take the one after the series' previous point, in the order the rows are made."""
    if flat is None:
        flat = marshal.loads(chunk.blob)  # this process's own bytes (recover parses the spool: flat_points)
    steps, values, times = flat[0::2], flat[1::2], chunk.point_times()
    series = chunk.series
    if None in steps:
        nxt = series.next_step
        for i, st in enumerate(steps):
            nxt = steps[i] = nxt if st is None else st
            nxt += 1
    series.next_step = steps[-1] + 1
    name, context = series.key
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

    def add(self, chunks: list[Chunk], csv_length: int) -> None:
        """Keep ``chunks`` (in memory first: a disk that fails keeps them for the CSV) and append them to the
        file."""
        self.chunks.extend(chunks)
        self.points += sum(len(c) for c in chunks)
        if self._fh is None:
            self._fh = self.opener(self.path)
            self._fh.write(SPOOL_MAGIC + _HEAD.pack(csv_length))
            self._named = set()
        parts = []
        for chunk in chunks:
            s = chunk.series
            if s.sid not in self._named:
                key = f"{s.key[0]},{s.key[1]}".encode()
                parts.append(_SERIES + _SERIES_HEAD.pack(s.sid, len(key)) + key)
                self._named.add(s.sid)
            marks = chunk.marks or []
            parts.append(_CHUNK + _CHUNK_HEAD.pack(s.sid, chunk.first, len(chunk), len(marks), len(chunk.blob),
                                                  chunk.times is not None))
            parts.extend(_MARK.pack(c, t) for c, t in marks)
            parts.append(chunk.blob)
            if chunk.times is not None:
                parts.append(array("d", chunk.times).tobytes())
        self._fh.write(b"".join(parts))

    @property
    def active(self) -> bool:
        """A spool file is open (its chunks' rows must be fsync'd before it goes)."""
        return self._fh is not None

    def flush(self, sync: bool) -> None:
        if self._fh is not None:
            self._fh.flush()
            if sync:
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


def read_spool(fh: IO[bytes]) -> tuple[int, Iterator[tuple[Chunk, list[Any]]]] | None:
    """The CSV length a spool was begun at and its chunks with their points (a torn or foreign tail ends them);
    None if not a spool. The points are parsed here (``flat_points``), never handed to ``marshal``."""
    head = fh.read(len(SPOOL_MAGIC) + _HEAD.size)
    if len(head) < len(SPOOL_MAGIC) + _HEAD.size or not head.startswith(SPOOL_MAGIC):
        return None
    (csv_length,) = _HEAD.unpack_from(head, len(SPOOL_MAGIC))

    def exact(n: int) -> bytes:
        if n < 0 or n > MAX_RECORD:
            raise ValueError("record too large")
        data = fh.read(n)
        if len(data) != n:
            raise EOFError
        return data

    def chunks() -> Iterator[tuple[Chunk, list[Any]]]:
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
                sid, first, n, nmarks, size, timed = _CHUNK_HEAD.unpack(exact(_CHUNK_HEAD.size))
                marks = [_MARK.unpack(exact(_MARK.size)) for _ in range(min(nmarks, MAX_RECORD // _MARK.size))]
                flat = flat_points(exact(size))
                times = None
                if timed:
                    times = array("d")
                    times.frombytes(exact(8 * n))
                if sid not in series or not n or len(flat) != 2 * n:
                    return
                chunk = Chunk(series[sid], b"", n, first, marks or None, times.tolist() if times else None)
                yield chunk, flat
            except (EOFError, struct.error, ValueError):
                return

    return csv_length, chunks()


MAX_RECORD = 1 << 30  # a record of a spool read back: larger is not ours


def flat_points(data: bytes) -> list[Any]:
    """A marshalled list of ints, Nones and floats (``pack``'s), parsed without ``marshal``: anything else in it
    (a spool is read back from a directory that may not be ours) is a ValueError."""
    if data[:1] != b"[":
        raise ValueError("not a list")
    (n,) = struct.unpack_from("<i", data, 1)
    out: list[Any] = []
    pos = 5
    for _ in range(n):
        code = data[pos:pos + 1]
        pos += 1
        if code == b"g":
            out.append(struct.unpack_from("<d", data, pos)[0])
            pos += 8
        elif code == b"i":
            out.append(struct.unpack_from("<i", data, pos)[0])
            pos += 4
        elif code == b"N":
            out.append(None)
        elif code == b"l":
            (size,) = struct.unpack_from("<i", data, pos)
            digits = struct.unpack_from(f"<{abs(size)}H", data, pos + 4)
            pos += 4 + 2 * abs(size)
            value = sum(d << (15 * k) for k, d in enumerate(digits))
            out.append(-value if size < 0 else value)
        else:
            raise ValueError(f"unexpected marshal code {code!r}")
    if pos != len(data):
        raise ValueError("trailing bytes")
    return out
