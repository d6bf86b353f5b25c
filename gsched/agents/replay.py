"""The replay source: a virtual node whose GPUs replay per-pod utilisation from a trace.

So the whole pipeline (agent → exporter → reports → history → profiles → dashboards)
runs on a laptop or in CI without a GPU. Two kinds of trace:

- the Alibaba GenAI duty-cycle tarball (`pod_gpu_duty_cycle_anon.tar.gz`, read with
  `gsched.traces.genai`): each pod's measured GPU duty cycle every 57 s; when the sibling
  `pod_gpu_memory_used_bytes_anon.tar.gz` is there, its memory too. Values hold from one
  sample to the next; the trace's own clock is used, folded onto a day;
- a native gsched trace (`.csv`): each GPU job's daily profile (times its GPU share),
  slot by slot, on a clock that starts at the wall clock.

A *virtual clock* runs `speed` times faster than the wall clock (`speed=60`: an hour a
minute). Pods are taken from the trace in sorted order starting at `offset` (default: a
hash of the node name, so nodes replaying one trace mostly get different pods),
`pods_per_gpu` to a GPU. A pod's utilisation is its share of the whole GPU; a GPU's is
the sum of its pods', capped at 100%. The trace has no clocks, power or temperatures, so
replayed readings leave those `None` rather than invent them.
"""

from __future__ import annotations

import csv
import io
import tarfile
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gsched.agents.model import GpuReading, NodeSample, PodUsage
from gsched.agents.source import ClosingSource
from gsched.errors import InputError
from gsched.models import DAY_SECONDS, DEFAULT_GPU_MEMORY_MIB

MIB = 1024 * 1024
REPLAY_NAMESPACE = "replay"


@dataclass
class _Pod:
    name: str
    t: np.ndarray  # trace seconds, sorted; or None-like empty for profile pods
    util: np.ndarray  # 0..1 of a whole GPU
    mem_t: np.ndarray | None = None
    mem_mib: np.ndarray | None = None
    slot_len: float = 0.0  # > 0: `util` is a daily profile of slots of this length


def _hold(t: np.ndarray, v: np.ndarray, at: float) -> float:
    """The last value at or before `at` (the first value before the first sample)."""
    i = int(np.searchsorted(t, at, side="right")) - 1
    return float(v[max(i, 0)])


def _read_memory(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """GenAI `timestamp_anon,value,container_ip` GPU memory bytes → pod → (t, MiB)."""
    try:
        with tarfile.open(path, "r:*") as tf:
            member = next(m for m in tf.getmembers() if m.isfile() and m.name.endswith(".csv"))
            f = tf.extractfile(member)
            assert f is not None
            text = f.read().decode("utf-8")
    except (tarfile.TarError, OSError, StopIteration) as e:
        raise InputError(f"cannot read GPU memory trace: {e}", file=str(path)) from None
    rows = csv.reader(io.StringIO(text))
    header = [h.strip() for h in next(rows, [])]
    try:
        it, iv, ip = (header.index(c) for c in ("timestamp_anon", "value", "container_ip"))
    except ValueError:
        raise InputError("missing column(s) timestamp_anon, value, container_ip",
                         file=str(path), line=1) from None
    acc: dict[str, tuple[list[float], list[float]]] = {}
    for lineno, row in enumerate(rows, start=2):
        if not row:
            continue
        try:
            t, v = float(row[it]), float(row[iv])
        except (ValueError, IndexError):
            raise InputError(f"bad sample row {row!r}", file=str(path), line=lineno) from None
        ts, vs = acc.setdefault(row[ip], ([], []))
        ts.append(t)
        vs.append(v / MIB)
    out = {}
    for pod, (ts, vs) in acc.items():
        t, v = np.asarray(ts), np.asarray(vs)
        order = np.argsort(t, kind="stable")
        out[pod] = (t[order], v[order])
    return out


def _load_genai(path: Path) -> tuple[list[_Pod], float]:
    from gsched.traces.genai import load_duty_cycle_samples

    samples = load_duty_cycle_samples(path)
    mem_path = path.with_name("pod_gpu_memory_used_bytes_anon.tar.gz")
    memory = _read_memory(mem_path) if mem_path.exists() and path.name != mem_path.name else {}
    pods = []
    for pid in sorted(samples):
        t, v = samples[pid]
        if len(t) == 0:
            continue
        mt, mv = memory.get(pid, (None, None))
        pods.append(_Pod(name=f"genai-{pid[:12]}", t=t, util=v, mem_t=mt, mem_mib=mv))
    if not pods:
        raise InputError("duty-cycle trace has no samples", file=str(path))
    return pods, float(min(p.t[0] for p in pods))


def _load_native(path: Path) -> list[_Pod]:
    from gsched.traces.load import load_trace

    trace = load_trace(path)
    slot_len = DAY_SECONDS / trace.slots
    pods = []
    for job in sorted(trace.jobs, key=lambda j: j.id):
        if job.num_gpu < 1:
            continue
        prof = np.clip(job.load_profile(trace.slots), 0.0, 1.0)
        mem = np.full(1, float(job.gpu_mem_mib)) if job.gpu_mem_mib else None
        pods.append(_Pod(name=job.id, t=np.zeros(0), util=prof, mem_t=np.zeros(1) if
                         mem is not None else None, mem_mib=mem, slot_len=slot_len))
    if not pods:
        raise InputError("trace has no GPU jobs to replay", file=str(path))
    return pods


def parse_source(spec: str) -> tuple[str, Path | None]:
    """`nvml` → ('nvml', None); `replay:PATH` → ('replay', PATH); else an InputError."""
    if spec == "nvml":
        return "nvml", None
    if spec.startswith("replay:") and len(spec) > len("replay:"):
        return "replay", Path(spec[len("replay:"):])
    raise InputError(f"unknown source {spec!r}; expected 'nvml' or 'replay:PATH'",
                     field="--source")


class ReplaySource(ClosingSource):
    """A virtual node of `gpus` GPUs replaying a trace; same interface as `NvmlSource`."""

    kind = "replay"

    def __init__(self, path: Path | str, node: str, gpus: int = 8, pods_per_gpu: int = 1,
                 speed: float = 1.0, offset: int | None = None, gpu_model: str = "A100",
                 clock: Callable[[], float] = time.time) -> None:
        if gpus < 1:
            raise InputError(f"a replay node needs at least one GPU, got {gpus}", field="--gpus")
        if pods_per_gpu < 1:
            raise InputError(f"pods per GPU must be at least 1, got {pods_per_gpu}")
        if speed <= 0:
            raise InputError(f"replay speed must be positive, got {speed}", field="--speed")
        self.path = Path(path)
        self.node = node
        self.gpus = gpus
        self.pods_per_gpu = pods_per_gpu
        self.speed = speed
        self.offset = offset
        self.gpu_model = gpu_model
        self.clock = clock
        self._pods: list[_Pod] = []
        self._assign: list[list[_Pod]] = []
        self._t0 = 0.0
        self._trace_t0 = 0.0
        self._wall0 = 0.0
        self._uuids: list[str] = []
        self._mem_total = float(DEFAULT_GPU_MEMORY_MIB.get(gpu_model,
                                                           DEFAULT_GPU_MEMORY_MIB["default"]))

    def open(self) -> None:
        if not self.path.exists():
            raise InputError("replay trace not found", file=str(self.path))
        name = self.path.name
        if name.endswith((".tar.gz", ".tgz")) or "duty_cycle" in name:
            pods, trace_t0 = _load_genai(self.path)
            self._trace_t0 = self._t0 = trace_t0
        else:
            pods = _load_native(self.path)
            self._trace_t0 = 0.0
            self._t0 = self.clock()
        n = len(pods)
        off = (zlib.crc32(self.node.encode()) if self.offset is None else self.offset) % n
        want = min(n, self.gpus * self.pods_per_gpu)
        chosen = [pods[(off + i) % n] for i in range(want)]
        self._pods = chosen
        self._assign = [chosen[g::self.gpus] for g in range(self.gpus)]
        self._uuids = [f"GPU-{uuid.uuid5(uuid.NAMESPACE_DNS, f'{self.node}/{g}')}"
                       for g in range(self.gpus)]
        self._wall0 = self.clock()

    def close(self) -> None:
        pass

    @property
    def gpu_count(self) -> int:
        return self.gpus

    @property
    def pod_names(self) -> list[str]:
        return [p.name for p in self._pods]

    def virtual_time(self) -> float:
        """The replay clock: starts at the trace's start, runs `speed` times the wall."""
        return self._t0 + (self.clock() - self._wall0) * self.speed

    def _value(self, pod: _Pod, vt: float) -> tuple[float, float | None]:
        day_t = (vt - self._t0) % DAY_SECONDS
        if pod.slot_len > 0:
            tod = (vt % DAY_SECONDS)
            util = float(pod.util[int(tod // pod.slot_len) % len(pod.util)])
            mem = float(pod.mem_mib[0]) if pod.mem_mib is not None else None
            return util, mem
        at = self._trace_t0 + day_t
        util = _hold(pod.t, pod.util, at)
        mem = None
        if pod.mem_t is not None and pod.mem_mib is not None and len(pod.mem_t):
            mem = _hold(pod.mem_t, pod.mem_mib, at)
        return util, mem

    def sample(self) -> NodeSample:
        if not self._uuids:
            raise RuntimeError("ReplaySource.sample() before open()")
        vt = self.virtual_time()
        gpus: list[GpuReading] = []
        usage: list[PodUsage] = []
        for g, pods in enumerate(self._assign):
            total_util = 0.0
            total_mem = 0.0
            for pod in pods:
                util, mem = self._value(pod, vt)
                pct = min(max(util, 0.0), 1.0) * 100.0
                total_util += pct
                total_mem += mem or 0.0
                usage.append(PodUsage(namespace=REPLAY_NAMESPACE, pod=pod.name,
                                      container="main",
                                      workload=f"{REPLAY_NAMESPACE}/{pod.name}",
                                      gpu_index=g, gpu_uuid=self._uuids[g], util_pct=pct,
                                      mem_used_mib=mem))
            used = min(total_mem, self._mem_total)
            gpus.append(GpuReading(index=g, uuid=self._uuids[g],
                                   name=f"{self.gpu_model} (replay)",
                                   util_pct=min(total_util, 100.0), mem_used_mib=used,
                                   mem_total_mib=self._mem_total))
        return NodeSample(timestamp=vt, node=self.node, gpus=tuple(gpus), pods=tuple(usage))
