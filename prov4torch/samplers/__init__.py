"""Background samplers: system (psutil), GPU (NVML) and energy (RAPL and NVML counters where readable, else
estimated with codecarbon's models; codecarbon's live tracker on request).

None of them runs on the training thread, none of them can stop training: a failing
reader warns once per kind of failure and the rest keeps sampling. ``attach(run)``
starts the enabled ones and stops them (final reading, summaries) at ``end_run``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from .base import Sampler, TelemetryWarning

__all__ = ["Host", "Sampler", "TelemetryWarning", "attach"]



class Host(Protocol):
    """What the samplers need of a run: where readings and summaries go, and when it ends."""

    world_size: int

    def log_system_metric(self, name: str, value: float, timestamp: float) -> None: ...

    def update_environment(self, info: Mapping[str, Any]) -> None: ...

    def add_run_attributes(self, attrs: Mapping[str, Any]) -> None: ...

    def on_end(self, callback: Callable[[Any], None]) -> None: ...


def attach(run: Host, *, system: bool, energy: bool | str, interval_s: float, country: str | None) -> None:
    """Start the samplers for ``run`` and register their stop on ``run.on_end``."""

    def sink(name: str, value: float, ts: float) -> None:
        run.log_system_metric(name, value, ts)

    samplers: list[Sampler] = []
    gpu_reader = None
    if system:
        from .gpu import GpuReader, GpuSampler, gpu_expected
        from .system import SystemReader, SystemSampler

        holder: dict[str, Any] = {}

        def setup_system() -> None:
            holder["reader"] = SystemReader()

        samplers.append(SystemSampler(lambda: holder["reader"](), interval_s, sink, setup=setup_system))
        gpu_reader = GpuReader(on_describe=run.update_environment)
        samplers.append(GpuSampler(gpu_reader, interval_s, sink, setup=gpu_reader.setup,
                                   warn_if_unavailable=gpu_expected()))
    tracker = None
    if energy:
        from .energy import EnergyTracker

        tracker = EnergyTracker(country, interval_s=interval_s, per_process=run.world_size > 1,
                                live=energy == "codecarbon")
        tracker.start()
    for s in samplers:
        s.start()

    def stop(_run: Any) -> None:
        attrs: dict[str, object] = {"p4t:sampleIntervalSeconds": float(interval_s)} if samplers else {}
        for s in samplers:
            s.stop()
            attrs.update(s.summary())
            if s.unavailable:
                attrs[f"p4t:{s.name}SamplerOff"] = s.unavailable
        if gpu_reader is not None:
            gpu_reader.close()
        if tracker is not None:
            joules = attrs.get("p4t:gpuEnergyJoules")
            attrs.update(tracker.stop(gpu_joules=float(joules) if isinstance(joules, (int, float)) else None))
        problems = sorted({m for s in samplers for k, m in s.failures.items() if k != "unavailable"})
        if problems:
            attrs["p4t:telemetryWarnings"] = problems
        run.add_run_attributes(attrs)

    run.on_end(stop)
