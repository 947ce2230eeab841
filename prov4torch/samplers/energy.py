"""Energy and CO2 through codecarbon's *offline* tracker (no network access, ever).

codecarbon's ``start()`` takes 1-2 s, so it runs on a thread of its own and never
delays ``start_run``. It writes no file (``output_methods=[]``) and its logger is
silenced; it swallows its own errors and returns None, so a None is detected here
and turned into one warning. In a distributed job it measures this process only
(``tracking_mode="process"``): per-machine figures summed over ranks double-count.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from .base import warn

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
        self.tracker: Any = None
        self.error: str | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._start, name="prov4torch-energy", daemon=True)
        self._thread.start()

    def _start(self) -> None:
        try:
            tracker = self.factory(**self.kwargs)
            tracker.start()
            if getattr(tracker, "_start_time", True) is None:
                raise RuntimeError("codecarbon did not start (it reported no error)")
            self.tracker = tracker
        except Exception as exc:  # noqa: BLE001 - telemetry never kills training
            self.error = f"{type(exc).__name__}: {exc}"
            warn(f"prov4torch: energy tracking off: codecarbon failed to start: {self.error}")

    def stop(self, timeout_s: float = 10.0) -> dict[str, object]:
        """Stop the tracker; the run attributes it measured (empty if it could not)."""
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                warn(f"prov4torch: codecarbon did not start within {timeout_s:g} s; no energy figures")
                return {"p4t:energyError": "codecarbon start timed out"}
        if self.tracker is None:
            return {"p4t:energyError": self.error} if self.error else {}
        try:
            emissions = self.tracker.stop()
        except Exception as exc:  # noqa: BLE001
            emissions, self.error = None, f"{type(exc).__name__}: {exc}"
        data = getattr(self.tracker, "final_emissions_data", None)
        if emissions is None or data is None:
            why = self.error or "codecarbon returned no figures (it swallowed its own error)"
            warn(f"prov4torch: no energy figures: {why}")
            return {"p4t:energyError": why}
        return self._attributes(data)

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
