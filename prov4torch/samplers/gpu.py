"""GPU readings through NVML (the ``pynvml`` module of nvidia-ml-py).

Devices: those this rank uses — ``CUDA_VISIBLE_DEVICES`` (indices or UUIDs) mapped to
NVML devices, narrowed to ``LOCAL_RANK``'s device in a distributed job. One NVML
call can take milliseconds, so this only ever runs on the sampler thread. A field
a device does not support (e.g. the energy counter on older GPUs) warns once and
the other fields keep coming.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import GpuUnavailable
from .base import Sampler, warn


def _decode(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def visible_devices(count: int, env: Mapping[str, str] | None = None) -> list[str | int]:
    """NVML indices (ints) or UUIDs (strings) this rank uses, in CUDA's logical order."""
    env = os.environ if env is None else env
    cvd = env.get("CUDA_VISIBLE_DEVICES")
    if cvd is None:
        visible: list[str | int] = list(range(count))
    else:
        visible = []
        for part in cvd.split(","):
            part = part.strip()
            if not part:
                continue
            if part.lstrip("-").isdigit():
                if int(part) < 0:
                    break  # CUDA stops at the first invalid index
                visible.append(int(part))
            else:
                visible.append(part)
    if "LOCAL_RANK" in env and visible:
        try:
            return [visible[int(env["LOCAL_RANK"]) % len(visible)]]
        except ValueError:
            pass
    return visible


class GpuReader:
    """Reads utilisation, memory, power, energy, temperature and SM clock of each device."""

    def __init__(self, nvml: Any = None, env: Mapping[str, str] | None = None,
                 on_describe: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.nvml = nvml
        self.env = env
        self.on_describe = on_describe
        self.devices: list[tuple[int, Any]] = []
        self.failed_fields: set[str] = set()
        self._energy0: dict[int, float] = {}

    def setup(self) -> None:
        """Initialise NVML and find the devices (on the sampler thread)."""
        if self.nvml is None:
            try:
                import pynvml
            except ImportError as exc:
                raise GpuUnavailable("the pynvml module is missing: pip install nvidia-ml-py") from exc
            self.nvml = pynvml
        nv = self.nvml
        try:
            nv.nvmlInit()
        except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
            raise GpuUnavailable(f"NVML could not start ({_decode(exc) or type(exc).__name__})") from exc
        count = nv.nvmlDeviceGetCount()
        for logical, ident in enumerate(visible_devices(count, self.env)):
            try:
                handle = (nv.nvmlDeviceGetHandleByIndex(ident) if isinstance(ident, int)
                          else nv.nvmlDeviceGetHandleByUUID(ident))
            except Exception as exc:  # noqa: BLE001
                warn(f"prov4torch: GPU {ident!r} from CUDA_VISIBLE_DEVICES is not an NVML device: {exc}")
                continue
            self.devices.append((logical, handle))
        if not self.devices:
            raise GpuUnavailable("no visible NVIDIA GPU")
        if self.on_describe is not None:
            self.on_describe(self.describe())

    def describe(self) -> dict[str, Any]:
        """GPU models, driver, count and memory sizes, for the run's environment entity."""
        nv = self.nvml
        info: dict[str, Any] = {"gpu_count": len(self.devices)}
        with contextlib.suppress(Exception):
            info["gpu_driver"] = _decode(nv.nvmlSystemGetDriverVersion())
        models, memory = [], []
        for _, h in self.devices:
            try:
                models.append(_decode(nv.nvmlDeviceGetName(h)))
                memory.append(int(nv.nvmlDeviceGetMemoryInfo(h).total))
            except Exception:  # noqa: BLE001
                continue
        if models:
            info["gpu_models"] = sorted(set(models))
        if memory:
            info["gpu_memory_total_bytes"] = sum(memory)
        return info

    def _field(self, i: int, name: str, fn: Callable[[], float], out: dict[str, float]) -> None:
        key = f"gpu/{i}/{name}"
        if key in self.failed_fields:
            return
        try:
            out[key] = fn()
        except Exception as exc:  # noqa: BLE001 - NVMLError_NotSupported and friends
            self.failed_fields.add(key)
            warn(f"prov4torch: GPU {i} cannot report {name} ({_decode(exc) or type(exc).__name__}); "
                 "the other GPU readings go on")

    def __call__(self) -> Mapping[str, float]:
        nv = self.nvml
        out: dict[str, float] = {}
        for i, h in self.devices:
            fields: dict[str, Callable[[], float]] = {
                "utilization_percent": functools.partial(_utilization, nv, h),
                "memory_used_bytes": functools.partial(_memory_used, nv, h),
                "power_watts": functools.partial(_power, nv, h),
                "energy_joules": functools.partial(self._energy, i, h),
                "temperature_c": functools.partial(_temperature, nv, h),
                "sm_clock_mhz": functools.partial(_sm_clock, nv, h),
            }
            for name, read in fields.items():
                self._field(i, name, read, out)
        return out

    def _energy(self, i: int, h: Any) -> float:
        """Joules since the first reading (NVML's counter is millijoules since driver load)."""
        mj = float(self.nvml.nvmlDeviceGetTotalEnergyConsumption(h))
        base = self._energy0.setdefault(i, mj)
        return (mj - base) / 1000.0

    def close(self) -> None:
        if self.devices:
            with contextlib.suppress(Exception):
                self.nvml.nvmlShutdown()


def gpu_expected(env: Mapping[str, str] | None = None) -> bool:
    """Whether this process looks like it uses a GPU (then a missing NVML deserves a warning)."""
    env = os.environ if env is None else env
    if env.get("CUDA_VISIBLE_DEVICES"):
        return True
    torch = sys.modules.get("torch")
    try:
        return bool(torch is not None and torch.cuda.is_available())
    except Exception:  # noqa: BLE001
        return False


class GpuSampler(Sampler):
    name = "gpu"

    def summary(self) -> dict[str, object]:
        util = [a for k, a in self.aggregates.items() if k.endswith("/utilization_percent") and a.count]
        mem = [a for k, a in self.aggregates.items() if k.endswith("/memory_used_bytes") and a.count]
        power = [a for k, a in self.aggregates.items() if k.endswith("/power_watts") and a.count]
        energy = [a for k, a in self.aggregates.items() if k.endswith("/energy_joules") and a.count]
        out: dict[str, object] = {}
        if util:
            out["p4t:gpuUtilizationMean"] = round(sum(a.mean or 0.0 for a in util) / len(util), 3)
            out["p4t:gpuUtilizationPeak"] = max(a.peak for a in util)
        if mem:
            out["p4t:gpuMemoryPeakBytes"] = int(max(a.peak for a in mem))
            out["p4t:gpuMemoryMeanBytes"] = int(sum(a.mean or 0.0 for a in mem) / len(mem))
        if power:
            out["p4t:gpuPowerMeanWatts"] = round(sum(a.mean or 0.0 for a in power), 3)
        if energy:
            out["p4t:gpuEnergyJoules"] = round(sum(a.last for a in energy), 3)
        return out


def _utilization(nv: Any, h: Any) -> float:
    return float(nv.nvmlDeviceGetUtilizationRates(h).gpu)


def _memory_used(nv: Any, h: Any) -> float:
    return float(nv.nvmlDeviceGetMemoryInfo(h).used)


def _power(nv: Any, h: Any) -> float:
    return float(nv.nvmlDeviceGetPowerUsage(h)) / 1000.0


def _temperature(nv: Any, h: Any) -> float:
    return float(nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU))


def _sm_clock(nv: Any, h: Any) -> float:
    return float(nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM))
