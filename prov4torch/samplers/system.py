"""System readings through psutil: CPU, memory, disk and network I/O of this process and machine."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from .base import Sampler

PROCESS_CPU = "system/process/cpu_percent"
PROCESS_RSS = "system/process/rss_bytes"
CHILDREN_RSS = "system/process/children_rss_bytes"
SYSTEM_CPU = "system/cpu/percent"
SYSTEM_MEMORY_USED = "system/memory/used_bytes"
SYSTEM_MEMORY_PERCENT = "system/memory/percent"
DISK_READ = "system/disk/read_bytes"
DISK_WRITE = "system/disk/write_bytes"
NET_SENT = "system/network/sent_bytes"
NET_RECV = "system/network/recv_bytes"


def child_pids(pid: int) -> list[int] | None:
    """Descendants of ``pid`` from /proc/<pid>/task/<tid>/children (Linux), breadth first.

    A few file reads, instead of psutil's scan of every process on the machine (1.8 ms
    with 63 processes here, more on a busy node). None where that file does not exist.
    """
    found: list[int] = []
    queue = [pid]
    while queue:
        current = queue.pop(0)
        try:
            tids = os.listdir(f"/proc/{current}/task")
        except OSError:
            if current == pid:
                return None
            continue
        for tid in tids:
            try:
                with open(f"/proc/{current}/task/{tid}/children", encoding="ascii") as fh:
                    kids = [int(x) for x in fh.read().split()]
            except FileNotFoundError:
                if current == pid:
                    return None  # kernel without CONFIG_PROC_CHILDREN
                continue
            except OSError:
                continue
            found.extend(kids)
            queue.extend(kids)
    return found


class SystemReader:
    """One call = one reading; I/O counters are deltas since the previous reading."""

    def __init__(self, psutil: Any = None, pid: int | None = None) -> None:
        if psutil is None:
            import psutil as _psutil

            psutil = _psutil
        self.psutil = psutil
        self.process = psutil.Process(pid or os.getpid())
        self.process.cpu_percent(None)  # prime: the first call always returns 0.0
        psutil.cpu_percent(None)
        self._disk = self._counters(psutil.disk_io_counters)
        self._net = self._counters(psutil.net_io_counters)

    @staticmethod
    def _counters(fn: Any) -> Any:
        try:
            return fn()
        except Exception:  # noqa: BLE001 - some containers have no /proc/diskstats
            return None

    def __call__(self) -> Mapping[str, float]:
        ps, proc = self.psutil, self.process
        with proc.oneshot():
            out: dict[str, float] = {
                PROCESS_CPU: proc.cpu_percent(None),
                PROCESS_RSS: proc.memory_info().rss,
            }
        pids = child_pids(proc.pid)
        children = proc.children(recursive=True) if pids is None else [ps.Process(p) for p in pids]
        rss = 0
        for child in children:
            try:
                rss += child.memory_info().rss
            except ps.Error:
                continue  # a DataLoader worker exited between listing and reading
        out[CHILDREN_RSS] = rss
        vm = ps.virtual_memory()
        out[SYSTEM_CPU] = ps.cpu_percent(None)
        out[SYSTEM_MEMORY_USED] = vm.total - vm.available
        out[SYSTEM_MEMORY_PERCENT] = vm.percent
        disk = self._counters(ps.disk_io_counters)
        if disk is not None and self._disk is not None:
            out[DISK_READ] = max(0, disk.read_bytes - self._disk.read_bytes)
            out[DISK_WRITE] = max(0, disk.write_bytes - self._disk.write_bytes)
        self._disk = disk
        net = self._counters(ps.net_io_counters)
        if net is not None and self._net is not None:
            out[NET_SENT] = max(0, net.bytes_sent - self._net.bytes_sent)
            out[NET_RECV] = max(0, net.bytes_recv - self._net.bytes_recv)
        self._net = net
        return out


class SystemSampler(Sampler):
    name = "system"

    def summary(self) -> dict[str, object]:
        a = self.aggregates
        out: dict[str, object] = {}
        if PROCESS_RSS in a and a[PROCESS_RSS].count:
            out["p4t:peakRssBytes"] = int(a[PROCESS_RSS].peak)
        cpu_mean = a[PROCESS_CPU].mean if PROCESS_CPU in a else None
        if cpu_mean is not None:
            out["p4t:processCpuPercentMean"] = round(cpu_mean, 3)
        if SYSTEM_MEMORY_USED in a and a[SYSTEM_MEMORY_USED].count:
            out["p4t:systemMemoryPeakBytes"] = int(a[SYSTEM_MEMORY_USED].peak)
        return out
