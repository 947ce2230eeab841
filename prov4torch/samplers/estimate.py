"""Energy and CO2 estimated from CPU time, with codecarbon's own models and data, without starting codecarbon.

Used for what codecarbon does not measure: a run too short to be worth codecarbon's start-up (1-2 s of CPU), the
seconds before codecarbon started, and a codecarbon that failed. The models are codecarbon's own, read from
its installed data files (nothing is imported from it, so nothing of its start-up is paid):

* CPU power: the processor's TDP from codecarbon's ``cpu_power.csv`` (its default of 85 W when the model is not
  listed) times codecarbon's load curve ``0.1 + 0.9 * load**3`` for the whole machine, or ``TDP * load`` of this
  process's CPU share when tracking one process of a distributed job (codecarbon's ``cpu_load`` mode);
* RAM power: 3 W per 8 GB (codecarbon's rule for DDR3/DDR4);
* carbon intensity: codecarbon's ``global_energy_mix.json`` for the country given (ISO 3166 alpha-3), else its
  world average.

Every figure names this method (``p4t:energyMethod``) so an auditor can tell an estimate from a measurement.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

DEFAULT_TDP_W = 85.0  # codecarbon's POWER_CONSTANT
RAM_W_PER_8GB = 3.0
WORLD_G_PER_KWH = 475.0  # codecarbon's world average (carbon_intensity_per_source.json), if its data is missing


def codecarbon_data() -> Path | None:
    """codecarbon's data directory, found without importing codecarbon."""
    try:
        spec = importlib.util.find_spec("codecarbon")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    return data if data.is_dir() else None


def _normal(name: str) -> str:
    name = re.sub(r"\((r|tm)\)|\bcpu\b|\bprocessor\b|@.*$|\d+-core", " ", name.lower())
    return " ".join(name.split())


def cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def tdp_watts(model: str | None, data: Path | None) -> tuple[float, str]:
    """The TDP of ``model`` from codecarbon's table (the longest listed name inside it), else the default."""
    if model and data is not None:
        wanted = f" {_normal(model)} "
        best: tuple[int, float, str] | None = None
        try:
            with open(data / "hardware" / "cpu_power.csv", encoding="utf-8") as fh:
                for row in csv.reader(fh):
                    if len(row) < 2 or not row[0].strip():
                        continue
                    last = row[0].split()[-1].lower()
                    if last not in wanted:  # cheap test first: the table has ~5,000 rows
                        continue
                    name = _normal(row[0])
                    if name and f" {name} " in wanted and (best is None or len(name) > best[0]):
                        best = (len(name), float(row[1]), row[0])
        except (OSError, ValueError):
            best = None
        if best is not None:
            return best[1], f"TDP {best[1]:g} W ({best[2]})"
    return DEFAULT_TDP_W, f"TDP {DEFAULT_TDP_W:g} W (codecarbon's default: CPU model not in its table)"


def carbon_intensity(country: str | None, data: Path | None) -> tuple[float, str]:
    """g CO2eq per kWh for ``country`` (alpha-3) from codecarbon's energy mix, else the world average."""
    world = WORLD_G_PER_KWH
    if data is not None:
        try:
            mix = json.loads((data / "private_infra" / "global_energy_mix.json").read_text(encoding="utf-8"))
            sources = json.loads((data / "private_infra" / "carbon_intensity_per_source.json")
                                 .read_text(encoding="utf-8"))
            world = float(sources.get("world_average", world))
            entry = mix.get(country.upper()) if country else None
            if isinstance(entry, dict) and entry.get("carbon_intensity") is not None:
                return float(entry["carbon_intensity"]), country.upper()  # type: ignore[union-attr]
        except (OSError, ValueError, AttributeError):
            pass
    return world, "WORLD"


POWERCAP = Path("/sys/class/powercap")


class Rapl:
    """The CPU packages' energy counters (Intel RAPL / AMD through powercap: ``intel-rapl:N/energy_uj``), where
    this process may read them (often root only). ``read()`` gives microjoules since the first read, summed over
    the packages, across counter wraps (a wrap between two reads is counted once: ``tick`` at least every
    ``TICK_S``, far below the shortest wrap period of a package, ~20 minutes at 200 W)."""

    TICK_S = 30.0

    def __init__(self, root: Path = POWERCAP) -> None:
        self.zones: list[tuple[Path, float]] = []  # energy_uj file, its range
        try:
            names = sorted(p for p in root.iterdir() if re.fullmatch(r"intel-rapl:\d+", p.name))
        except OSError:
            names = []
        for zone in names:
            try:
                (zone / "energy_uj").read_text()
                span = float((zone / "max_energy_range_uj").read_text())
            except (OSError, ValueError):
                continue  # not readable here (the kernel restricts it to root since 2020)
            self.zones.append((zone / "energy_uj", span))
        self._last: list[float] = []
        self._total = 0.0
        # the tick thread, the run's start and end, codecarbon's start: two reads at once would count a delta twice
        self._lock = threading.RLock()  # reentrant: a signal handler ending the run may interrupt a read
        if self.zones:
            self._last = self._raw()

    def _raw(self) -> list[float]:
        return [float(path.read_text()) for path, _span in self.zones]

    def read(self) -> float | None:
        if not self.zones:
            return None
        with self._lock:
            try:
                now = self._raw()
            except (OSError, ValueError):
                return None
            for i, ((_path, span), before, after) in enumerate(zip(self.zones, self._last, now, strict=True)):
                delta = after - before
                self._total += delta if delta >= 0 else delta + span  # wrapped once
                self._last[i] = after
            return self._total


def rapl_measured(a: Snapshot, b: Snapshot) -> bool:
    """Whether the CPU energy between ``a`` and ``b`` is measured by RAPL (both read its counters)."""
    return a.rapl_uj is not None and b.rapl_uj is not None


@dataclass(frozen=True)
class Snapshot:
    """CPU time counters at one moment."""

    wall: float
    busy: float  # machine CPU seconds not idle (all cores), or this process's CPU seconds
    total: float  # machine CPU seconds (all cores), or wall seconds x cores
    rapl_uj: float | None = None  # the packages' energy (``Rapl.read``), where readable
    machine_busy: float | None = None  # per process: the machine's busy CPU seconds, for this process's share


class Estimator:
    """Energy between two snapshots of CPU time (see the module docstring)."""

    def __init__(self, country: str | None = None, per_process: bool = False, powercap: Path = POWERCAP) -> None:
        import psutil

        self.psutil = psutil
        self.per_process = per_process
        self.cores = psutil.cpu_count() or 1
        self.process = psutil.Process(os.getpid()) if per_process else None
        self.wanted_country = country
        self._models: tuple[float, str, float, float, str] | None = None  # read when first needed
        self.rapl = Rapl(powercap)

    def _model(self) -> tuple[float, str, float, float, str]:
        """TDP, its source, RAM watts, carbon intensity, country: codecarbon's tables, read once (~10 ms)."""
        if self._models is None:
            data = codecarbon_data()
            tdp, source = tdp_watts(cpu_model(), data)
            p = self.psutil
            memory = p.Process(os.getpid()).memory_info().rss if self.per_process else p.virtual_memory().total
            intensity, country = carbon_intensity(self.wanted_country, data)
            self._models = (tdp, source, RAM_W_PER_8GB * memory / (8 * 1024**3), intensity, country)
        return self._models

    @property
    def tdp(self) -> float:
        return self._model()[0]

    @property
    def intensity(self) -> float:
        return self._model()[3]

    @property
    def country(self) -> str:
        return self._model()[4]

    def snapshot(self) -> Snapshot:
        now = time.time()
        rapl = self.rapl.read()
        t = self.psutil.cpu_times()
        idle = t.idle + getattr(t, "iowait", 0.0)
        total = sum(t)
        if self.process is not None:
            p = self.process.cpu_times()
            return Snapshot(now, p.user + p.system + p.children_user + p.children_system, now * self.cores, rapl,
                            total - idle)
        return Snapshot(now, total - idle, total, rapl)

    def energy(self, a: Snapshot, b: Snapshot) -> dict[str, float]:
        """kWh of CPU and RAM, and kg CO2eq, between ``a`` and ``b``: the CPU measured by RAPL where both have it
        (per process: its share of the machine's busy CPU time), else estimated from CPU time."""
        hours = max(0.0, b.wall - a.wall) / 3600.0
        span = b.total - a.total
        load = min(1.0, max(0.0, (b.busy - a.busy) / span)) if span > 0 else 0.0
        tdp, _source, ram_w, intensity, _country = self._model()
        cpu_w = tdp * load if self.per_process else tdp * (0.1 + 0.9 * load**3)
        cpu = cpu_w * hours / 1000.0
        if a.rapl_uj is not None and b.rapl_uj is not None:  # (``rapl_measured``)
            cpu = max(0.0, b.rapl_uj - a.rapl_uj) / 3.6e12  # microjoules -> kWh
            if self.per_process:
                busy = (b.machine_busy or 0.0) - (a.machine_busy or 0.0)
                cpu *= min(1.0, max(0.0, (b.busy - a.busy) / busy)) if busy > 0 else 0.0
        ram = ram_w * hours / 1000.0
        return {"cpu": cpu, "ram": ram, "energy": cpu + ram, "emissions": (cpu + ram) * intensity / 1000.0}

    def method(self, measured: bool = False) -> str:
        """How ``energy`` got its figures; ``measured``: the CPU's from RAPL (``rapl_measured`` of its snapshots)."""
        if measured:
            share = " x this process's share of busy CPU time" if self.per_process else ""
            cpu = f"cpu:RAPL ({len(self.rapl.zones)} package counter(s), powercap{share})"
        else:
            mode = "process CPU share" if self.per_process else "machine CPU load, 0.1+0.9*load^3"
            cpu = f"cpu:estimate ({self._model()[1]}, {mode})"
        return f"{cpu}; ram:estimate (3 W per 8 GB)"
