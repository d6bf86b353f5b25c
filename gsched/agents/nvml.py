"""The NVML source: one `NodeSample` per call, from every GPU the driver sees.

Per GPU: utilisation, memory used/total, SM clock, power, temperature; per process:
utilisation (`nvmlDeviceGetProcessUtilization`) and memory
(`nvmlDeviceGetComputeRunningProcesses`), summed per pod through `pods.PodAttributor`.

A sampling pass never raises for what GPUs do in production:

- `GPU_IS_LOST` (fell off the bus) marks that GPU `lost` for this pass; the others are
  sampled as usual and the lost one is retried next pass (a reset may bring it back).
- `NOT_SUPPORTED` leaves that field `None` and the call is not made again on that GPU.
- `NOT_FOUND` from the per-process utilisation call means "no new samples" (the GPU was
  idle); a process that exits mid-pass just drops out of the pass.
- Any other NVML error leaves the field `None` and is named in `NodeSample.errors`.

`pynvml` is looked up at call time, so tests replace its functions (and only those).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pynvml

from gsched.agents.model import GpuReading, NodeSample, PodUsage
from gsched.agents.pods import PodAttributor, PodRef
from gsched.agents.source import ClosingSource
from gsched.errors import UnavailableError

MIB = 1024 * 1024


class _GpuLost(Exception):
    pass


@dataclass
class _Device:
    index: int
    handle: Any = None
    uuid: str = ""
    name: str = ""
    unsupported: set[str] = field(default_factory=set)
    last_seen_us: int = 0


def _decode(v: object) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class NvmlSource(ClosingSource):
    """Samples GPUs through NVML. `open()` first; `sample()` every interval."""

    kind = "nvml"

    def __init__(self, node: str, attributor: PodAttributor | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.node = node
        self.attributor = attributor
        self.clock = clock
        self._devices: list[_Device] = []
        self._open = False
        self._pid_pods: dict[int, PodRef] = {}

    def open(self) -> None:
        """Initialise NVML; `UnavailableError` with the reason when there is none."""
        try:
            pynvml.nvmlInit()
            count = pynvml.nvmlDeviceGetCount()
        except pynvml.NVMLError as e:
            raise UnavailableError(
                f"NVML is not available ({e}): no NVIDIA driver on this machine; "
                "use --source replay:PATH to play back a trace instead") from None
        except OSError as e:
            raise UnavailableError(f"NVML is not available ({e})") from None
        self._devices = [_Device(index=i) for i in range(count)]
        self._open = True

    def close(self) -> None:
        if self._open:
            try:
                pynvml.nvmlShutdown()
            except pynvml.NVMLError:
                pass
            self._open = False

    @property
    def gpu_count(self) -> int:
        return len(self._devices)

    def _call(self, dev: _Device, what: str, errors: list[str], fn: Callable[..., Any],
              *args: Any) -> Any:
        """One NVML call on one GPU; None when it cannot answer (see module docstring)."""
        if what in dev.unsupported:
            return None
        try:
            return fn(*args)
        except pynvml.NVMLError as e:
            code = getattr(e, "value", None)
            if code == pynvml.NVML_ERROR_GPU_IS_LOST:
                raise _GpuLost() from None
            if code == pynvml.NVML_ERROR_NOT_SUPPORTED:
                dev.unsupported.add(what)
                return None
            # NOT_FOUND: nothing to report (no samples since the last pass). SUCCESS: the
            # bindings raise it when the driver answers "no samples at all" to the size
            # query of nvmlDeviceGetProcessUtilization.
            if code in (pynvml.NVML_ERROR_NOT_FOUND, pynvml.NVML_SUCCESS):
                return None
            errors.append(f"gpu {dev.index}: {what}: {e}")
            return None

    def _ensure_handle(self, dev: _Device, errors: list[str]) -> bool:
        if dev.handle is not None:
            return True
        handle = self._call(dev, "handle", errors, pynvml.nvmlDeviceGetHandleByIndex,
                            dev.index)
        if handle is None:
            return False
        uuid = self._call(dev, "uuid", errors, pynvml.nvmlDeviceGetUUID, handle)
        name = self._call(dev, "name", errors, pynvml.nvmlDeviceGetName, handle)
        dev.handle = handle
        dev.uuid = _decode(uuid) if uuid is not None else dev.uuid or f"GPU-index-{dev.index}"
        dev.name = _decode(name) if name is not None else dev.name
        return True

    def _read_gpu(self, dev: _Device, errors: list[str]) -> tuple[GpuReading, list[PodUsage]]:
        h = dev.handle
        util = self._call(dev, "utilization", errors, pynvml.nvmlDeviceGetUtilizationRates, h)
        mem = self._call(dev, "memory", errors, pynvml.nvmlDeviceGetMemoryInfo, h)
        clock = self._call(dev, "sm_clock", errors, pynvml.nvmlDeviceGetClockInfo, h,
                           pynvml.NVML_CLOCK_SM)
        power = self._call(dev, "power", errors, pynvml.nvmlDeviceGetPowerUsage, h)
        temp = self._call(dev, "temperature", errors, pynvml.nvmlDeviceGetTemperature, h,
                          pynvml.NVML_TEMPERATURE_GPU)
        reading = GpuReading(
            index=dev.index, uuid=dev.uuid, name=dev.name,
            util_pct=float(util.gpu) if util is not None else None,
            mem_copy_util_pct=float(util.memory) if util is not None else None,
            mem_used_mib=mem.used / MIB if mem is not None else None,
            mem_total_mib=mem.total / MIB if mem is not None else None,
            sm_clock_mhz=float(clock) if clock is not None else None,
            power_w=power / 1000.0 if power is not None else None,
            temp_c=float(temp) if temp is not None else None)
        return reading, self._read_pods(dev, errors)

    def _read_pods(self, dev: _Device, errors: list[str]) -> list[PodUsage]:
        procs = self._call(dev, "processes", errors,
                           pynvml.nvmlDeviceGetComputeRunningProcesses, dev.handle) or []
        if not procs:
            return []
        samples = self._call(dev, "process_utilization", errors,
                             pynvml.nvmlDeviceGetProcessUtilization, dev.handle,
                             dev.last_seen_us) or []
        newest: dict[int, tuple[int, float]] = {}
        for s in samples:
            ts = int(s.timeStamp)
            if s.pid not in newest or ts > newest[s.pid][0]:
                newest[s.pid] = (ts, float(s.smUtil))
            dev.last_seen_us = max(dev.last_seen_us, ts)
        per_pod: dict[PodRef, tuple[float, float | None, list[int]]] = {}
        for p in procs:
            pod = self._pod_of(int(p.pid))
            if pod is None:
                continue
            util = min(max(newest.get(p.pid, (0, 0.0))[1], 0.0), 100.0)
            mem = p.usedGpuMemory / MIB if getattr(p, "usedGpuMemory", None) is not None \
                else None
            u0, m0, pids = per_pod.get(pod, (0.0, None, []))
            m1 = m0 if mem is None else (m0 or 0.0) + mem
            per_pod[pod] = (u0 + util, m1, pids + [int(p.pid)])
        return [PodUsage(namespace=pod.namespace, pod=pod.pod, container=pod.container,
                         workload=pod.workload, gpu_index=dev.index, gpu_uuid=dev.uuid,
                         util_pct=min(u, 100.0), mem_used_mib=m, pids=tuple(pids))
                for pod, (u, m, pids) in per_pod.items()]

    def _pod_of(self, pid: int) -> PodRef | None:
        """Cached per live PID; a miss is retried next pass (the pod list may catch up)."""
        hit = self._pid_pods.get(pid)
        if hit is None and self.attributor is not None:
            hit = self.attributor.attribute(pid)
            if hit is not None:
                self._pid_pods[pid] = hit
        return hit

    def sample(self) -> NodeSample:
        """One pass over every GPU; never raises for GPU or driver trouble."""
        if not self._open:
            raise RuntimeError("NvmlSource.sample() before open()")
        errors: list[str] = []
        gpus: list[GpuReading] = []
        pods: list[PodUsage] = []
        seen_pids: set[int] = set()
        for dev in self._devices:
            try:
                if not self._ensure_handle(dev, errors):
                    gpus.append(GpuReading(index=dev.index, uuid=dev.uuid or
                                           f"GPU-index-{dev.index}", name=dev.name, lost=True))
                    continue
                reading, usage = self._read_gpu(dev, errors)
            except _GpuLost:
                errors.append(f"gpu {dev.index}: GPU is lost")
                dev.handle = None  # fetch a fresh handle next pass
                gpus.append(GpuReading(index=dev.index, uuid=dev.uuid or
                                       f"GPU-index-{dev.index}", name=dev.name, lost=True))
                continue
            gpus.append(reading)
            pods.extend(usage)
            for u in usage:
                seen_pids.update(u.pids)
        # Forget exited processes, so a reused PID is attributed afresh.
        for pid in [p for p in self._pid_pods if p not in seen_pids]:
            del self._pid_pods[pid]
        return NodeSample(timestamp=self.clock(), node=self.node, gpus=tuple(gpus),
                          pods=tuple(pods), errors=tuple(errors))
