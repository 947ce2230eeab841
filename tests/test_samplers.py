"""Samplers: deterministic injected readers, failure injection, real psutil and codecarbon, NVML."""

from __future__ import annotations

import sys
import threading
import time
import types
from pathlib import Path

import pytest
import torch
from conftest import load, rank_activity

import prov4torch
from prov4torch.samplers.base import Sampler, TelemetryWarning
from prov4torch.samplers.energy import EnergyTracker
from prov4torch.samplers.gpu import GpuReader, visible_devices


class FakeClock:
    def __init__(self) -> None:
        self.t = 1_000.0

    def __call__(self) -> float:
        self.t += 1.0
        return self.t


def collect():
    got: list[tuple[str, float, float]] = []
    return got, lambda name, value, ts: got.append((name, value, ts))


# -- the framework, with injected readers and clock -----------------------------------------

def test_injected_reader_gives_a_deterministic_series():
    values = iter([10.0, 20.0, 30.0])
    got, sink = collect()
    s = Sampler(lambda: {"x": next(values)}, 60, sink, clock=FakeClock())
    for _ in range(3):
        s.sample()
    assert got == [("x", 10.0, 1001.0), ("x", 20.0, 1002.0), ("x", 30.0, 1003.0)]
    agg = s.aggregates["x"]
    assert (agg.count, agg.mean, agg.peak, agg.last) == (3, 20.0, 30.0, 30.0)


def test_reader_failing_once_warns_once_and_sampling_goes_on():
    calls = {"n": 0}

    def flaky():
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("sensor busy")
        return {"x": float(calls["n"])}

    got, sink = collect()
    s = Sampler(flaky, 60, sink, clock=FakeClock(), name="flaky")
    with pytest.warns(TelemetryWarning, match="flaky sampler: OSError: sensor busy"):
        for _ in range(4):
            s.sample()
    assert [v for _, v, _ in got] == [1.0, 3.0, 4.0]


def test_reader_always_failing_warns_once_per_kind(recwarn):
    def broken():
        raise PermissionError("no RAPL permission")

    s = Sampler(broken, 60, collect()[1], name="energy-ish")
    with pytest.warns(TelemetryWarning) as record:
        for _ in range(5):
            s.sample()
    assert len([w for w in record if issubclass(w.category, TelemetryWarning)]) == 1
    assert s.samples == 0 and list(s.failures) == ["PermissionError"]


def test_thread_takes_a_final_reading_at_stop():
    got, sink = collect()
    s = Sampler(lambda: {"x": 1.0}, 3600, sink)  # the interval never elapses
    s.start()
    assert s.stop(timeout_s=5)
    assert len(got) == 1  # the final reading: short runs still get a figure


def test_hanging_reader_cannot_stall_stop():
    release = threading.Event()

    def hang():
        release.wait(30)
        return {"x": 1.0}

    s = Sampler(hang, 0.01, collect()[1], name="stuck")
    s.start()
    time.sleep(0.05)
    t0 = time.perf_counter()
    with pytest.warns(TelemetryWarning, match="did not stop within 0.3 s"):
        assert s.stop(timeout_s=0.3) is False
    assert time.perf_counter() - t0 < 1.0
    release.set()


# -- real psutil through the public API ------------------------------------------------------

def test_real_psutil_sampler_records_system_series_and_summaries():
    with prov4torch.start_run(system_metrics=True, energy=False, interval_s=0.05) as run:
        junk = [bytearray(1 << 20) for _ in range(20)]  # some memory to see
        time.sleep(0.4)
        del junk
    doc = load(run.prov_path)
    series = {e["p4t:name"]: e for k, e in doc["entity"].items() if "/metric/system/" in k}
    for name in ("system/process/rss_bytes", "system/process/cpu_percent", "system/cpu/percent",
                 "system/memory/used_bytes"):
        assert name in series, sorted(series)
        assert int(series[name]["p4t:count"]["$"]) >= 3
        assert series[name]["p4t:context"] == "system"
    act = rank_activity(doc)
    assert int(act["p4t:peakRssBytes"]["$"]) > 20 * (1 << 20)
    assert act["p4t:sampleIntervalSeconds"]["$"] == "0.05"
    assert run.status == "FINISHED"


def test_switches_turn_samplers_off(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PROV4TORCH_SYSTEM_METRICS", "0")
    with prov4torch.start_run(interval_s=0.05) as run:
        time.sleep(0.15)
    assert not [k for k in load(run.prov_path)["entity"] if "/metric/system/" in k]
    monkeypatch.setenv("PROV4TORCH_SYSTEM_METRICS", "1")
    with prov4torch.start_run(system_metrics=False, interval_s=0.05) as run2:  # argument wins
        time.sleep(0.15)
    assert not [k for k in load(run2.prov_path)["entity"] if "/metric/system/" in k]


def test_bad_interval_is_rejected():
    with pytest.raises(prov4torch.InvalidValueError, match="interval_s must be a finite positive number"):
        prov4torch.start_run(system_metrics=True, interval_s=0)
    assert prov4torch.active_run() is None


# -- GPU: a fake pynvml at the hardware boundary, and the real one when a GPU exists ------------

class NVMLError(Exception):
    pass


def fake_nvml(count: int = 2, unsupported: tuple[str, ...] = (), hang: threading.Event | None = None,
              init_error: str | None = None) -> types.ModuleType:
    m = types.ModuleType("pynvml")
    m.NVML_TEMPERATURE_GPU, m.NVML_CLOCK_SM = 0, 1
    state = {"tick": 0, "energy": 5_000_000.0}

    def check(name):
        if name in unsupported:
            raise NVMLError("Not Supported")

    def init():
        if init_error:
            raise NVMLError(init_error)

    def util(h):
        if hang is not None:
            hang.wait(30)
        state["tick"] += 1
        return types.SimpleNamespace(gpu=50 + 10 * h, memory=0)

    def energy(h):
        check("energy")
        state["energy"] += 1000.0
        return state["energy"]

    m.nvmlInit = init
    m.nvmlShutdown = lambda: None
    m.nvmlDeviceGetCount = lambda: count
    m.nvmlDeviceGetHandleByIndex = lambda i: i
    m.nvmlDeviceGetHandleByUUID = lambda u: 1
    m.nvmlSystemGetDriverVersion = lambda: b"555.42"
    m.nvmlDeviceGetName = lambda h: "NVIDIA H100 80GB HBM3"
    m.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(total=80 << 30, used=(h + 1) << 30)
    m.nvmlDeviceGetUtilizationRates = util
    m.nvmlDeviceGetPowerUsage = lambda h: 300_000
    m.nvmlDeviceGetTotalEnergyConsumption = energy
    m.nvmlDeviceGetTemperature = lambda h, kind: 60
    m.nvmlDeviceGetClockInfo = lambda h, kind: 1755
    return m


def test_visible_devices_respects_cuda_visible_devices_and_local_rank():
    assert visible_devices(4, {}) == [0, 1, 2, 3]
    assert visible_devices(4, {"CUDA_VISIBLE_DEVICES": "2,3"}) == [2, 3]
    assert visible_devices(4, {"CUDA_VISIBLE_DEVICES": "2,3", "LOCAL_RANK": "1"}) == [3]
    assert visible_devices(4, {"CUDA_VISIBLE_DEVICES": ""}) == []
    assert visible_devices(4, {"CUDA_VISIBLE_DEVICES": "1,-1,2"}) == [1]
    assert visible_devices(2, {"CUDA_VISIBLE_DEVICES": "GPU-abc"}) == ["GPU-abc"]


def test_gpu_reader_with_fake_nvml_reads_each_device():
    described = {}
    r = GpuReader(nvml=fake_nvml(), env={}, on_describe=described.update)
    r.setup()
    first, second = r(), r()
    assert first["gpu/0/utilization_percent"] == 50.0 and first["gpu/1/utilization_percent"] == 60.0
    assert first["gpu/1/memory_used_bytes"] == float(2 << 30)
    assert first["gpu/0/power_watts"] == 300.0
    assert first["gpu/0/energy_joules"] == 0.0 and second["gpu/0/energy_joules"] > 0
    assert described == {"gpu_count": 2, "gpu_driver": "555.42", "gpu_models": ["NVIDIA H100 80GB HBM3"],
                         "gpu_memory_total_bytes": 2 * (80 << 30)}


def test_unsupported_gpu_field_warns_once_and_the_rest_goes_on():
    r = GpuReader(nvml=fake_nvml(count=1, unsupported=("energy",)), env={})
    r.setup()
    with pytest.warns(TelemetryWarning, match="GPU 0 cannot report energy_joules"):
        first = r()
    second = r()
    assert "gpu/0/energy_joules" not in first and "gpu/0/energy_joules" not in second
    assert second["gpu/0/temperature_c"] == 60.0


def test_gpu_sampler_in_a_run_with_fake_nvml(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(count=2))
    monkeypatch.setenv("LOCAL_RANK", "1")  # this rank uses its own GPU only
    with prov4torch.start_run(system_metrics=True, energy=False, interval_s=0.05) as run:
        time.sleep(0.3)
    doc = load(run.prov_path)
    names = {e["p4t:name"] for k, e in doc["entity"].items() if "/metric/system/" in k}
    assert "gpu/0/utilization_percent" in names and "gpu/1/utilization_percent" not in names
    act = rank_activity(doc)
    assert act["p4t:gpuUtilizationPeak"]["$"] == "60.0"
    assert int(act["p4t:gpuMemoryPeakBytes"]["$"]) == 2 << 30
    env = doc["entity"][f"p4t:run/{run.run_id}/rank/0/environment"]
    assert env["p4t:gpuDriver"] == "555.42" and env["p4t:gpuModel"] == "NVIDIA H100 80GB HBM3"


def test_hanging_nvml_does_not_stall_end_run(monkeypatch: pytest.MonkeyPatch):
    release = threading.Event()
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(count=1, hang=release))
    run = prov4torch.start_run(system_metrics=True, energy=False, interval_s=0.05)
    time.sleep(0.2)
    t0 = time.perf_counter()
    with pytest.warns(TelemetryWarning, match="gpu sampler did not stop"):
        run.end_run()
    assert time.perf_counter() - t0 < 15
    assert rank_activity(load(run.prov_path))["p4t:status"] == "FINISHED"
    release.set()


def test_no_nvml_on_a_cpu_machine_is_quiet_and_recorded(monkeypatch: pytest.MonkeyPatch, recwarn):
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(init_error="NVML Shared Library Not Found"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with prov4torch.start_run(system_metrics=True, energy=False, interval_s=0.05) as run:
        time.sleep(0.15)
    assert not [str(w.message) for w in recwarn if issubclass(w.category, TelemetryWarning)]
    act = rank_activity(load(run.prov_path))
    assert "NVML could not start" in act["p4t:gpuSamplerOff"]
    assert act["p4t:status"] == "FINISHED"


def test_no_nvml_when_a_gpu_is_expected_warns(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(init_error="Driver Not Loaded"))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    with pytest.warns(TelemetryWarning, match="gpu sampler off: NVML could not start"):
        with prov4torch.start_run(system_metrics=True, energy=False, interval_s=0.05):
            time.sleep(0.15)


@pytest.mark.gpu
def test_real_nvml_reads_a_real_gpu():
    pynvml = pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
    except Exception:
        pytest.skip("no NVIDIA driver / GPU")
    r = GpuReader(env={})
    r.setup()
    reading = r()
    assert reading["gpu/0/memory_used_bytes"] > 0
    assert 0 <= reading["gpu/0/utilization_percent"] <= 100
    assert r.describe()["gpu_models"]


# -- energy: real codecarbon (offline), and its silent failures --------------------------------

def test_real_codecarbon_offline_measures_energy_without_files_or_delay(tmp_path: Path):
    t0 = time.perf_counter()
    run = prov4torch.start_run(system_metrics=False, energy="codecarbon", interval_s=1, energy_country="DEU")
    assert time.perf_counter() - t0 < 1.0  # codecarbon's ~1.5 s start is off the training thread
    deadline = time.time() + 9  # codecarbon starts after 3 s and takes 1-5 s to start
    a = torch.randn(128, 128)
    while time.time() < deadline:  # training-like work: torch ops release the GIL, as a training step does
        a = torch.tanh(a @ a)  # (a pure Python loop holding the GIL slowed codecarbon's start past 9 s on a GPU host)
    run.end_run()
    act = rank_activity(load(run.prov_path))
    assert float(act["p4t:energyKWh"]["$"]) > 0
    assert float(act["p4t:emissionsKgCO2eq"]["$"]) > 0
    assert act["p4t:energyCountry"] == "DEU"
    assert act["p4t:energyTrackingMode"] == "machine"
    assert act["p4t:energyTool"].startswith("codecarbon "), act.get("p4t:energyFallbackReason")
    # the seconds before it started are estimated
    assert 2.9 < float(act["p4t:energyEstimatedSeconds"]["$"]) < time.perf_counter() - t0
    method = act["p4t:energyMethod"]
    assert "first " in method and "cpu:estimate" in method
    measured = any(m in method for m in ("intel_rapl", "powermetrics", "windows_emi"))
    assert act["p4t:energyFallback"] is (not measured or "gpu:" not in method or "ram:" in method)
    assert list(tmp_path.glob("*.csv")) == [] and list(tmp_path.glob(".codecarbon*")) == []


class SilentTracker:
    """What codecarbon does when it fails inside: no exception, None from stop()."""

    _start_time = 1.0

    def start(self):
        pass

    def stop(self):
        return None


def test_codecarbon_returning_none_is_detected_warned_and_estimated_instead():
    tracker = EnergyTracker(factory=lambda **kw: SilentTracker())
    tracker.start(delay_s=0)
    time.sleep(0.2)
    with pytest.warns(TelemetryWarning, match="no energy figures from codecarbon: codecarbon returned no figures"):
        attrs = tracker.stop()
    assert attrs["p4t:energyFallback"] is True and attrs["p4t:energyMethod"].startswith("cpu:estimate")
    assert "codecarbon returned no figures" in attrs["p4t:energyFallbackReason"]
    assert attrs["p4t:energyError"] == "codecarbon returned no figures (it swallowed its own error)"


def test_codecarbon_that_cannot_start_is_warned_and_the_run_goes_on():
    def boom(**kw):
        raise RuntimeError("no RAPL permission")

    tracker = EnergyTracker(factory=boom)
    with pytest.warns(TelemetryWarning, match="codecarbon failed to start: RuntimeError: no RAPL permission"):
        tracker.start(delay_s=0)
        time.sleep(0.2)
        attrs = tracker.stop()
    assert attrs["p4t:energyError"] == "RuntimeError: no RAPL permission"
    assert attrs["p4t:energyKWh"] > 0 and attrs["p4t:energyTool"].startswith("prov4torch estimate")


def test_a_short_run_never_starts_codecarbon_and_is_estimated_with_its_models():
    started = []
    tracker = EnergyTracker(country_iso_code="FRA", factory=lambda **kw: started.append(kw) or SilentTracker())
    t0 = time.perf_counter()
    tracker.start()
    x = 0
    while time.perf_counter() - t0 < 0.3:
        x += 1
    attrs = tracker.stop()
    assert time.perf_counter() - t0 < 1.0 and started == []
    assert attrs["p4t:energyCountry"] == "FRA" and "codecarbon not started" in attrs["p4t:energyFallbackReason"]
    assert attrs["p4t:emissionsKgCO2eq"] == pytest.approx(attrs["p4t:energyKWh"] * 0.001 * tracker.estimator.intensity)
    assert 0 < attrs["p4t:cpuEnergyKWh"] <= 85 * 1.0 / 3600 / 1000 * 1.01  # at most the default TDP for 1 s


def test_estimate_uses_codecarbons_cpu_table_and_energy_mix():
    import subprocess

    from prov4torch.samplers.estimate import Estimator, Snapshot, carbon_intensity, codecarbon_data, tdp_watts

    data = codecarbon_data()
    assert data is not None
    found = subprocess.run([sys.executable, "-c", "import sys; from prov4torch.samplers.estimate import Estimator; "
                            "Estimator('DEU'); print('codecarbon' in sys.modules)"], capture_output=True, text=True)
    assert found.stdout.strip() == "False", found.stderr  # its data is read, its start-up never paid
    assert tdp_watts("Intel(R) Xeon(R) CPU E5-2686 v4 @ 2.30GHz", data)[0] == 145.0
    assert tdp_watts("An Unknown CPU", data)[0] == 85.0
    assert carbon_intensity("DEU", data)[1] == "DEU" and carbon_intensity("XXX", data)[1] == "WORLD"
    e = Estimator()
    hour = 3600 * e.cores  # CPU seconds in one hour
    # one hour at full load: TDP kWh of CPU (codecarbon's curve reaches 1.0 at load 1.0); idle: 10 %; half: 21.25 %
    assert e.energy(Snapshot(0, 0, 0), Snapshot(3600, hour, hour))["cpu"] == pytest.approx(e.tdp / 1000)
    assert e.energy(Snapshot(0, 0, 0), Snapshot(3600, 0, hour))["cpu"] == pytest.approx(0.1 * e.tdp / 1000)
    assert e.energy(Snapshot(0, 0, 0), Snapshot(3600, hour / 2, hour))["cpu"] == pytest.approx(0.2125 * e.tdp / 1000)


def test_distributed_runs_use_per_process_energy_tracking():
    seen = {}

    def factory(**kw):
        seen.update(kw)
        return SilentTracker()

    EnergyTracker(per_process=True, factory=factory)._start()
    assert seen["tracking_mode"] == "process" and seen["output_methods"] == []
    assert "country_iso_code" not in seen  # default: codecarbon's world average, recorded as WORLD


def test_child_pids_finds_dataloader_like_children():
    import subprocess

    from prov4torch.samplers.system import SystemReader, child_pids

    kids = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"]) for _ in range(2)]
    try:
        found = child_pids(__import__("os").getpid())
        if found is None:
            pytest.skip("no /proc/<pid>/task/<tid>/children on this kernel")
        assert {k.pid for k in kids} <= set(found)
        reading = SystemReader()()
        assert reading["system/process/children_rss_bytes"] > 0
    finally:
        for k in kids:
            k.kill()
            k.wait()


def powercap(root: Path, packages: dict[str, tuple[int, int]]) -> Path:
    """A powercap tree as the kernel exposes it (the hardware boundary): packages with energy_uj and its range,
    a sub-zone (a core domain, counted inside its package) that must not be added again."""
    for name, (uj, span) in packages.items():
        zone = root / name
        zone.mkdir(parents=True)
        (zone / "energy_uj").write_text(f"{uj}\n")
        (zone / "max_energy_range_uj").write_text(f"{span}\n")
        sub = root / f"{name}:0"
        sub.mkdir()
        (sub / "energy_uj").write_text("999999999\n")
        (sub / "max_energy_range_uj").write_text(f"{span}\n")
    return root


def test_rapl_counters_measure_the_cpu_across_a_wrap_and_say_so(tmp_path: Path):
    from prov4torch.samplers.estimate import Estimator, Snapshot, rapl_measured

    root = powercap(tmp_path / "powercap", {"intel-rapl:0": (1_000_000, 10_000_000), "intel-rapl:1": (0, 10**12)})
    e = Estimator(powercap=root)
    assert len(e.rapl.zones) == 2
    a = e.snapshot()
    (root / "intel-rapl:0" / "energy_uj").write_text("9000000\n")  # +8 J
    (root / "intel-rapl:1" / "energy_uj").write_text("2000000\n")  # +2 J
    e.rapl.read()  # a tick between
    (root / "intel-rapl:0" / "energy_uj").write_text("500000\n")  # wrapped: +1.5 J
    b = e.snapshot()
    b = Snapshot(a.wall + 3600, b.busy, b.total, b.rapl_uj)  # an hour later: RAM 3 W per 8 GB for an hour
    got = e.energy(a, b)
    assert got["cpu"] == pytest.approx(11.5 / 3.6e6)  # 11.5 J measured, whatever the load
    assert e.method(rapl_measured(a, b)).startswith("cpu:RAPL (2 package counter(s), powercap)")
    assert got["emissions"] == pytest.approx(got["energy"] * e.intensity / 1000)


def test_rapl_that_only_root_may_read_leaves_the_estimate(tmp_path: Path):
    from prov4torch.samplers.estimate import Estimator, rapl_measured

    root = powercap(tmp_path / "powercap", {"intel-rapl:0": (1, 10)})
    (root / "intel-rapl:0" / "energy_uj").unlink()
    (root / "intel-rapl:0" / "energy_uj").mkdir()  # unreadable as a file, as without permission
    e = Estimator(powercap=root)
    assert e.rapl.zones == [] and e.snapshot().rapl_uj is None
    assert Estimator(powercap=tmp_path / "absent").rapl.read() is None
    a, b = e.snapshot(), e.snapshot()
    e.energy(a, b)
    assert e.method(rapl_measured(a, b)).startswith("cpu:estimate (TDP")


def test_a_process_share_of_rapl_energy_in_a_distributed_job(tmp_path: Path):
    from prov4torch.samplers.estimate import Estimator, Snapshot, rapl_measured

    e = Estimator(per_process=True, powercap=powercap(tmp_path / "pc", {"intel-rapl:0": (0, 10**12)}))
    a = Snapshot(0.0, 10.0, 0.0, 0.0, 100.0)
    b = Snapshot(10.0, 15.0, 40.0, 36e6, 120.0)  # 36 J on the package; this process had 5 of 20 busy CPU seconds
    assert e.energy(a, b)["cpu"] == pytest.approx(9 / 3.6e6)
    assert "share of busy CPU time" in e.method(rapl_measured(a, b))


def test_gpu_energy_from_nvml_counters_joins_the_estimate():
    tracker = EnergyTracker(country_iso_code="FRA", live=False)
    tracker.start()
    attrs = tracker.stop(gpu_joules=7200.0)  # 2 Wh measured by the GPUs' counters
    assert attrs["p4t:gpuEnergyKWh"] == pytest.approx(0.002)
    assert attrs["p4t:energyKWh"] == pytest.approx(0.002 + attrs["p4t:cpuEnergyKWh"] + attrs["p4t:ramEnergyKWh"])
    intensity = tracker.estimator.intensity
    assert attrs["p4t:emissionsKgCO2eq"] == pytest.approx(attrs["p4t:energyKWh"] * intensity / 1000)
    assert attrs["p4t:energyMethod"].endswith("gpu:NVML total energy counter")
    assert "no GPU measured" not in attrs["p4t:energyFallbackReason"]


def test_a_run_on_gpus_counts_their_nvml_energy(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(count=2))  # +1 J per reading of each device
    with prov4torch.start_run(system_metrics=True, energy=True, interval_s=0.05) as run:
        time.sleep(0.3)
    act = rank_activity(load(run.prov_path))
    joules = float(act["p4t:gpuEnergyJoules"]["$"])
    assert joules > 0
    assert float(act["p4t:gpuEnergyKWh"]["$"]) == pytest.approx(joules / 3.6e6)
    assert "gpu:NVML total energy counter" in act["p4t:energyMethod"]


def test_two_rapl_reads_at_once_count_a_delta_once(tmp_path: Path):
    """The tick thread and a snapshot (the run's end, codecarbon's start) may read the counters at the same moment:
    each joule is counted once."""
    from prov4torch.samplers.estimate import Rapl

    root = powercap(tmp_path / "pc", {"intel-rapl:0": (0, 10**12)})
    rapl = Rapl(root)
    (root / "intel-rapl:0" / "energy_uj").write_text("5000000\n")  # +5 J since the first read

    class Slow(list):  # the last values, handed out slowly: both readers see them before either updates them
        def __iter__(self):
            for x in list.__iter__(self):
                time.sleep(0.2)
                yield x

    rapl._last = Slow(rapl._last)
    readers = [threading.Thread(target=rapl.read) for _ in range(2)]
    for t in readers:
        t.start()
    for t in readers:
        t.join()
    assert rapl.read() == 5_000_000
