"""The sampler framework: a daemon thread calling an injected reader every interval.

``Sampler(read, interval_s, sink, clock)``: ``read()`` returns ``{metric name: number}``;
each reading goes to ``sink(name, value, timestamp)`` (the run's ``log_metric`` in
context ``system``). The thread waits on an ``Event``, so ``stop()`` wakes it at
once; it takes one final reading (short runs get figures) and is joined with a
bounded timeout: a reader that hangs cannot stall ``end_run``.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..errors import TelemetryWarning as TelemetryWarning  # re-exported
from ..warn import warn as _warn

Reader = Callable[[], Mapping[str, float]]
Sink = Callable[[str, float, float], None]


def warn(message: str) -> None:
    """Emit a TelemetryWarning; never raise, even when warnings are errors."""
    _warn(message, TelemetryWarning)  # never raises: telemetry never kills training, even with warnings as errors


@dataclass
class Aggregate:
    """Running count / mean / peak of one sampled metric."""

    count: int = 0
    total: float = 0.0
    peak: float = -math.inf
    last: float = math.nan

    def add(self, v: float) -> None:
        if math.isfinite(v):
            self.count += 1
            self.total += v
            self.peak = max(self.peak, v)
        self.last = v

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None


class Sampler:
    """Calls ``read`` on a daemon thread every ``interval_s`` seconds, and once more at stop."""

    name = "sampler"

    def __init__(
        self,
        read: Reader,
        interval_s: float,
        sink: Sink,
        clock: Callable[[], float] = time.time,
        name: str | None = None,
        setup: Callable[[], None] | None = None,
        warn_if_unavailable: bool = True,
    ) -> None:
        self.read = read
        self.setup = setup
        self.warn_if_unavailable = warn_if_unavailable
        self.unavailable: str | None = None  # why setup failed, if it did
        self.interval_s = interval_s
        self.sink = sink
        self.clock = clock
        self.name = name or self.name
        self.aggregates: dict[str, Aggregate] = {}
        self.failures: dict[str, str] = {}  # failure kind -> first message
        self.samples = 0
        self._stop = threading.Event()
        self._abandoned = False  # stop() gave up on a hung reader: stay silent from then on
        self._thread: threading.Thread | None = None
        self._lock = threading.RLock()  # reentrant: the final reading may come from a signal handler in sample()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=f"prov4torch-{self.name}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        if self.setup is not None:
            try:
                self.setup()
            except Exception as exc:  # noqa: BLE001 - no device, no library: this sampler stays off
                self.unavailable = str(exc) or type(exc).__name__
                if self.warn_if_unavailable:
                    self.fail("unavailable", f"{self.name} sampler off: {self.unavailable}")
                return
        while not self._stop.wait(self.interval_s):
            self.sample()
        self.sample()  # the final reading

    def sample(self) -> None:
        """Take one reading now (on the calling thread); failures warn once per kind."""
        try:
            readings = self.read()
        except Exception as exc:  # noqa: BLE001 - telemetry never kills training
            self.fail(type(exc).__name__, f"{self.name} sampler: {type(exc).__name__}: {exc}")
            return
        if self._abandoned:  # a hung reader came back after its run ended
            return
        ts = self.clock()
        with self._lock:
            self.samples += 1
            for metric, value in readings.items():
                try:
                    v = float(value)
                    self.sink(metric, v, ts)
                except Exception as exc:  # noqa: BLE001
                    self.fail(f"sink:{type(exc).__name__}", f"{self.name} sampler: cannot record {metric}: {exc}")
                    continue
                agg = self.aggregates.get(metric)
                if agg is None:
                    agg = self.aggregates[metric] = Aggregate()
                agg.add(v)

    def fail(self, kind: str, message: str) -> None:
        """Record a failure; warn the first time this kind of failure happens."""
        if kind not in self.failures and not self._abandoned:
            self.failures[kind] = message
            warn(f"prov4torch: {message} (this reading is skipped; training goes on)")

    def stop(self, timeout_s: float = 5.0) -> bool:
        """Wake the thread, let it take its final reading, join it. False if it did not finish."""
        self._stop.set()
        if self._thread is None:
            return True
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            self.fail("hang", f"{self.name} sampler did not stop within {timeout_s:g} s; "
                      "its last readings are missing")
            self._abandoned = True
            return False
        return True

    def summary(self) -> dict[str, object]:
        """Run-level attributes (qualified names -> values) for the rank activity."""
        return {}
