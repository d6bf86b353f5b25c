"""A fake NVML driver installed at the `pynvml` module boundary (tests and benchmarks).

Only pynvml's *functions* are replaced; its error classes and constants stay the real
ones, so the agent's error handling is exercised against `pynvml.NVMLError(code)` exactly
as the real bindings raise it. Each GPU's behaviour is plain data: set `lost`, add a
call name to `unsupported`, or queue processes, and the fake answers accordingly.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from types import SimpleNamespace

import pynvml

MIB = 1024 * 1024


@dataclass
class FakeProcess:
    pid: int
    used_bytes: int | None
    sm_util: int | None  # None: NVML has no utilisation sample for it


@dataclass
class FakeGpu:
    uuid: str
    name: str = "NVIDIA A100-SXM4-80GB"
    util: int = 50
    mem_util: int = 10
    used_mib: int = 1024
    total_mib: int = 81920
    sm_clock: int = 1410
    power_mw: int = 250_000
    temp: int = 60
    lost: bool = False
    unsupported: set[str] = field(default_factory=set)
    processes: list[FakeProcess] = field(default_factory=list)


class FakeNvml:
    """Holds the fake GPUs; `install(monkeypatch)` swaps pynvml's functions for ours."""

    def __init__(self, gpus: list[FakeGpu], library_present: bool = True) -> None:
        self.gpus = gpus
        self.library_present = library_present
        self.calls: Counter[str] = Counter()
        self._ts = 1_000_000

    def _gpu(self, handle: int, call: str) -> FakeGpu:
        self.calls[call] += 1
        g = self.gpus[handle]
        if g.lost:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        if call in g.unsupported:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return g

    def nvmlInit(self) -> None:  # noqa: N802
        self.calls["init"] += 1
        if not self.library_present:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)

    def nvmlShutdown(self) -> None:  # noqa: N802
        self.calls["shutdown"] += 1

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:  # noqa: N802
        self._gpu(i, "handle")
        return i

    def nvmlDeviceGetUUID(self, h: int) -> str:  # noqa: N802
        return self._gpu(h, "uuid").uuid

    def nvmlDeviceGetName(self, h: int) -> str:  # noqa: N802
        return self._gpu(h, "name").name

    def nvmlDeviceGetUtilizationRates(self, h: int) -> SimpleNamespace:  # noqa: N802
        g = self._gpu(h, "utilization")
        return SimpleNamespace(gpu=g.util, memory=g.mem_util)

    def nvmlDeviceGetMemoryInfo(self, h: int) -> SimpleNamespace:  # noqa: N802
        g = self._gpu(h, "memory")
        return SimpleNamespace(total=g.total_mib * MIB, used=g.used_mib * MIB,
                               free=(g.total_mib - g.used_mib) * MIB)

    def nvmlDeviceGetClockInfo(self, h: int, kind: int) -> int:  # noqa: N802
        assert kind == pynvml.NVML_CLOCK_SM
        return self._gpu(h, "sm_clock").sm_clock

    def nvmlDeviceGetPowerUsage(self, h: int) -> int:  # noqa: N802
        return self._gpu(h, "power").power_mw

    def nvmlDeviceGetTemperature(self, h: int, sensor: int) -> int:  # noqa: N802
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        return self._gpu(h, "temperature").temp

    def nvmlDeviceGetComputeRunningProcesses(self, h: int) -> list[SimpleNamespace]:  # noqa: N802
        g = self._gpu(h, "processes")
        return [SimpleNamespace(pid=p.pid, usedGpuMemory=p.used_bytes) for p in g.processes]

    def nvmlDeviceGetProcessUtilization(self, h: int, last_seen: int) -> list:  # noqa: N802
        g = self._gpu(h, "process_utilization")
        self._ts += 1000
        out = [SimpleNamespace(pid=p.pid, timeStamp=self._ts, smUtil=p.sm_util, memUtil=0,
                               encUtil=0, decUtil=0)
               for p in g.processes if p.sm_util is not None]
        if not out:  # what the driver says when it has no samples newer than last_seen
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        return out

    FUNCTIONS = ("nvmlInit", "nvmlShutdown", "nvmlDeviceGetCount", "nvmlDeviceGetHandleByIndex",
                 "nvmlDeviceGetUUID", "nvmlDeviceGetName", "nvmlDeviceGetUtilizationRates",
                 "nvmlDeviceGetMemoryInfo", "nvmlDeviceGetClockInfo", "nvmlDeviceGetPowerUsage",
                 "nvmlDeviceGetTemperature", "nvmlDeviceGetComputeRunningProcesses",
                 "nvmlDeviceGetProcessUtilization")

    def install(self, monkeypatch: object) -> FakeNvml:
        """Replace pynvml's functions via a pytest monkeypatch (undone after the test)."""
        for name in self.FUNCTIONS:
            monkeypatch.setattr(pynvml, name, getattr(self, name))  # type: ignore[attr-defined]
        return self

    def install_permanently(self) -> FakeNvml:
        """For benchmarks: replace pynvml's functions for the rest of the process."""
        for name in self.FUNCTIONS:
            setattr(pynvml, name, getattr(self, name))
        return self


def eight_gpu_node(pods_per_gpu: int = 1, first_pid: int = 1000) -> FakeNvml:
    gpus = []
    pid = first_pid
    for i in range(8):
        procs = []
        for _ in range(pods_per_gpu):
            procs.append(FakeProcess(pid=pid, used_bytes=4096 * MIB, sm_util=40))
            pid += 1
        gpus.append(FakeGpu(uuid=f"GPU-0000000{i}-aaaa-bbbb-cccc-dddddddddddd", util=40 + i,
                            processes=procs))
    return FakeNvml(gpus)
