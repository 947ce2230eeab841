"""Energy and CO2: by default an estimate with codecarbon's own models and data (``estimate.py``: CPU time x the
TDP table codecarbon ships, its RAM model, its grid intensities), which costs nothing at the run's start or exit;
with ``energy="codecarbon"`` (``PROV4TORCH_ENERGY=codecarbon``) codecarbon's *offline* tracker as well (no
network access, ever) for runs long enough to pay for it. Measured here: on a ~7 s run the live tracker cost
1.2-1.6 s (its start competing for the GIL, its bounded stop); the record says which method gave each figure.

codecarbon's import and ``start()`` cost 1-2 s of CPU, so it starts on a thread of its own and only once the
run has lasted ``START_DELAY_S``: a short run never pays for it. ``stop()`` waits a bounded time for a start
in progress and for codecarbon's own stop; whatever codecarbon did not measure (the first seconds, a run too
short, a codecarbon that failed or timed out) is estimated from CPU time and added, and the method says so.
codecarbon writes no file (``output_methods=[]``) and its logger is silenced; it swallows its own errors and
returns None, so a None is detected here and turned into one warning. In a distributed job it measures this
process only (``tracking_mode="process"``): per-machine figures summed over ranks double-count.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from .base import warn
from .estimate import Estimator, Snapshot, rapl_measured

START_DELAY_S = 3.0  # codecarbon starts once the run has lasted this long
START_WAIT_S = 0.5  # at stop: the longest wait for a codecarbon start in progress
STOP_WAIT_S = 2.0  # and for codecarbon's own stop (its final measurement)

# codecarbon's CPU power modes that measure rather than estimate
MEASURED_CPU_MODES = {"intel_rapl", "intel_power_gadget", "windows_emi", "apple_powermetrics"}


def _default_factory(**kwargs: Any) -> Any:
    from codecarbon import OfflineEmissionsTracker

    # after the import: codecarbon sets its logger's level when it is imported, and logs
    # "offline tracker init" before it applies log_level
    logging.getLogger("codecarbon").setLevel(logging.CRITICAL)
    return OfflineEmissionsTracker(**kwargs)


class EnergyTracker:
    """Starts codecarbon off the training thread; ``stop()`` returns run attributes."""

    def __init__(
        self,
        country_iso_code: str | None = None,
        interval_s: float = 15.0,
        per_process: bool = False,
        project: str = "prov4torch",
        factory: Callable[..., Any] = _default_factory,
        live: bool = True,
    ) -> None:
        self.country = country_iso_code.upper() if country_iso_code else None
        self.kwargs: dict[str, Any] = {
            "project_name": project,
            "measure_power_secs": max(1.0, interval_s),
            "tracking_mode": "process" if per_process else "machine",
            "output_methods": [],
            "log_level": "critical",
            "allow_multiple_runs": True,
        }
        if self.country:
            self.kwargs["country_iso_code"] = self.country
        self.factory = factory
        self.live = live  # codecarbon's tracker runs too (else: estimated only, nothing waited for)
        self.tracker: Any = None
        self.error: str | None = None
        self._thread: threading.Thread | None = None
        self.estimator: Estimator | None = None
        self.first: Snapshot | None = None
        self.started: Snapshot | None = None  # when codecarbon began measuring
        self._cancel = threading.Event()

    def start(self, delay_s: float = START_DELAY_S) -> None:
        try:
            self.estimator = Estimator(self.country, self.kwargs["tracking_mode"] == "process")
            self.first = self.estimator.snapshot()
        except Exception as exc:  # noqa: BLE001 - telemetry never kills training
            self.estimator = self.first = None
            warn(f"prov4torch: energy estimate off: {type(exc).__name__}: {exc}")
        if self.estimator is not None and self.estimator.rapl.zones:  # RAPL counters wrap: read them now and then
            threading.Thread(target=self._tick, name="prov4torch-rapl", daemon=True).start()
        if not self.live:
            return
        self._thread = threading.Thread(target=self._delayed_start, args=(delay_s,), name="prov4torch-energy",
                                        daemon=True)
        self._thread.start()

    def _tick(self) -> None:
        estimator = self.estimator
        while estimator is not None and not self._cancel.wait(estimator.rapl.TICK_S):
            estimator.rapl.read()

    def _delayed_start(self, delay_s: float) -> None:
        if delay_s > 0 and self._cancel.wait(delay_s):
            return  # the run ended first: no codecarbon at all
        self._start()

    def _start(self) -> None:
        try:
            tracker = self.factory(**self.kwargs)
            tracker.start()
            if getattr(tracker, "_start_time", True) is None:
                raise RuntimeError("codecarbon did not start (it reported no error)")
            if self.estimator is not None:
                self.started = self.estimator.snapshot()
            self.tracker = tracker
        except Exception as exc:  # noqa: BLE001 - telemetry never kills training
            self.error = f"{type(exc).__name__}: {exc}"
            warn(f"prov4torch: energy tracking off: codecarbon failed to start: {self.error}")

    def stop(self, timeout_s: float = START_WAIT_S, gpu_joules: float | None = None) -> dict[str, object]:
        """Stop the tracker; the run attributes measured and estimated (empty if neither could be had).
        ``gpu_joules``: the GPUs' energy over the run from NVML's counters (the GPU sampler), counted where
        codecarbon did not measure the GPUs itself."""
        self._cancel.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        end = self.estimator.snapshot() if self.estimator is not None else None
        measured: dict[str, object] = {}
        why = self.error
        if self.tracker is None and self._thread is not None and self._thread.is_alive():
            why = f"codecarbon still starting after {timeout_s:g} s"
        elif self.tracker is None and why is None and not self.live:
            why = "codecarbon's live tracker not asked for (energy='codecarbon' or PROV4TORCH_ENERGY=codecarbon)"
        elif self.tracker is None and why is None:
            why = f"run shorter than {START_DELAY_S:g} s: codecarbon not started"
        elif self.tracker is not None:
            measured, problem = self._stop_codecarbon()
            why = problem or why
        if measured and self.started is not None and self.first is not None:
            measured = self._with_gap(measured, self.first, self.started)
        if measured:
            return with_gpu(measured, gpu_joules) if not measured.get("p4t:gpuEnergyKWh") else measured
        if self.estimator is None or self.first is None or end is None:
            return {"p4t:energyError": why} if why else {}
        attrs = with_gpu(self._estimated(self.first, end, why), gpu_joules)
        if self.error:
            attrs["p4t:energyError"] = self.error
        return attrs

    def _stop_codecarbon(self) -> tuple[dict[str, object], str | None]:
        result: dict[str, Any] = {}

        def stop() -> None:
            try:
                result["emissions"] = self.tracker.stop()
            except Exception as exc:  # noqa: BLE001
                result["error"] = f"{type(exc).__name__}: {exc}"

        stopper = threading.Thread(target=stop, name="prov4torch-energy-stop", daemon=True)
        stopper.start()
        stopper.join(STOP_WAIT_S)
        if stopper.is_alive():
            warn(f"prov4torch: codecarbon did not stop within {STOP_WAIT_S:g} s; energy estimated instead")
            return {}, f"codecarbon stop timed out after {STOP_WAIT_S:g} s"
        data = getattr(self.tracker, "final_emissions_data", None)
        if result.get("emissions") is None or data is None:
            self.error = result.get("error") or "codecarbon returned no figures (it swallowed its own error)"
            warn(f"prov4torch: no energy figures from codecarbon: {self.error}; energy estimated instead")
            return {}, self.error
        return self._attributes(data), None

    def _estimated(self, a: Snapshot, b: Snapshot, why: str | None) -> dict[str, object]:
        assert self.estimator is not None
        e = self.estimator.energy(a, b)
        measured = rapl_measured(a, b)
        return {
            "p4t:energyKWh": e["energy"], "p4t:cpuEnergyKWh": e["cpu"], "p4t:gpuEnergyKWh": 0.0,
            "p4t:ramEnergyKWh": e["ram"], "p4t:emissionsKgCO2eq": e["emissions"],
            "p4t:energyCountry": self.estimator.country, "p4t:energyMethod": self.estimator.method(measured),
            "p4t:energyTrackingMode": self.kwargs["tracking_mode"], "p4t:energyFallback": True,
            "p4t:energyFallbackReason": "; ".join(p for p in (
                why, "RAM power estimated" if measured else "CPU and RAM power estimated from CPU "
                "time", "no GPU measured") if p),
            "p4t:energyTool": "prov4torch estimate with codecarbon's models and data"
                              + (", RAPL counters" if measured else ""),
        }

    def _with_gap(self, measured: dict[str, object], a: Snapshot, b: Snapshot) -> dict[str, object]:
        """codecarbon's figures plus the estimate for the seconds before it started."""
        assert self.estimator is not None
        gap = self.estimator.energy(a, b)
        out = dict(measured)
        for key, part in (("p4t:energyKWh", "energy"), ("p4t:cpuEnergyKWh", "cpu"), ("p4t:ramEnergyKWh", "ram"),
                          ("p4t:emissionsKgCO2eq", "emissions")):
            out[key] = float(measured[key]) + gap[part]  # type: ignore[arg-type]
        out["p4t:energyEstimatedSeconds"] = round(b.wall - a.wall, 3)
        out["p4t:energyMethod"] = f"{measured.get('p4t:energyMethod')}; first {b.wall - a.wall:.1f} s: " \
                                  f"{self.estimator.method(rapl_measured(a, b))}"
        return out

    def _attributes(self, data: Any) -> dict[str, object]:
        modes = {}
        for hw in getattr(self.tracker, "_hardware", []) or []:
            kind = type(hw).__name__.lower()
            modes[kind] = getattr(hw, "_mode", None) or ("measured" if kind == "gpu" else "estimated")
        cpu_mode = modes.get("cpu", "unknown")
        fallback_parts = []
        if cpu_mode not in MEASURED_CPU_MODES:
            fallback_parts.append(f"CPU power estimated ({cpu_mode}, no RAPL)")
        if "gpu" not in modes:
            fallback_parts.append("no GPU measured")
        if "ram" in modes:
            fallback_parts.append("RAM power estimated")
        country_known = bool(getattr(data, "country_name", None))
        if not country_known:
            fallback_parts.append("grid carbon intensity: world average")
        return {
            "p4t:energyKWh": float(data.energy_consumed),
            "p4t:cpuEnergyKWh": float(data.cpu_energy),
            "p4t:gpuEnergyKWh": float(data.gpu_energy),
            "p4t:ramEnergyKWh": float(data.ram_energy),
            "p4t:emissionsKgCO2eq": float(data.emissions),
            "p4t:energyCountry": data.country_iso_code if country_known else "WORLD",
            "p4t:energyRegion": getattr(data, "region", None) or None,
            "p4t:energyMethod": "; ".join(f"{k}:{v}" for k, v in sorted(modes.items())) or None,
            "p4t:energyTrackingMode": getattr(data, "tracking_mode", None),
            "p4t:energyFallback": bool(fallback_parts),
            "p4t:energyFallbackReason": "; ".join(fallback_parts) or None,
            "p4t:energyTool": f"codecarbon {getattr(data, 'codecarbon_version', '')}".strip(),
        }


def with_gpu(attrs: dict[str, object], joules: float | None) -> dict[str, object]:
    """``attrs`` with the GPUs' energy measured by NVML's total-energy counters added (kWh, emissions at the same
    grid intensity, the method and the fallback reason saying so)."""
    if joules is None or not joules > 0:
        return attrs
    kwh = joules / 3.6e6
    out = dict(attrs)
    energy = float(attrs.get("p4t:energyKWh") or 0.0)  # type: ignore[arg-type]
    emissions = float(attrs.get("p4t:emissionsKgCO2eq") or 0.0)  # type: ignore[arg-type]
    out["p4t:gpuEnergyKWh"] = kwh
    out["p4t:energyKWh"] = energy + kwh
    out["p4t:emissionsKgCO2eq"] = emissions + (emissions / energy * kwh if energy > 0 else 0.0)
    out["p4t:energyMethod"] = f"{attrs.get('p4t:energyMethod')}; gpu:NVML total energy counter"
    reason = str(attrs.get("p4t:energyFallbackReason") or "")
    rest = "; ".join(p for p in reason.split("; ") if p and p != "no GPU measured")
    out["p4t:energyFallbackReason"] = rest or None
    out["p4t:energyFallback"] = bool(rest)
    return out
