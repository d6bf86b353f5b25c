"""The packing problem: workloads and GPUs as flat numpy arrays.

A workload is a per-GPU daily load profile (T slots), a GPU count on one node, GPU
memory and optional GPU models. Loads become integers in 1/1000 of a GPU, rounded *up*,
so an integer-feasible plan is feasible in floats; a workload whose peak exceeds the
usable capacity is *exclusive* and books whole GPUs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from gsched.errors import InputError
from gsched.models import DEFAULT_SLOTS, Cluster, Job

SCALE = 1000  # load units per GPU
#: CP-SAT deterministic time per wall second on packing models (measured: ~0.64 on the
#: 2-core development machine); converts a wall budget into a deterministic one.
DTIME_PER_SECOND = 0.6
#: deterministic time charged per CP-SAT call at least, for the Python work around it
MIN_STEP_DTIME = 0.02


class Workload(BaseModel):
    """One thing to place: per-GPU daily load, GPU count on one node, memory, models."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    id: str
    load: np.ndarray  # (T,) per-GPU load in [0, 1]
    num_gpu: int = Field(default=1, ge=1)
    gpu_mem_mib: int = Field(default=0, ge=0)
    gpu_models: tuple[str, ...] = ()
    fixed: tuple[str, tuple[int, ...]] | None = None
    current: tuple[str, tuple[int, ...]] | None = None
    #: share of each of its GPUs the workload *requests* (what Kubernetes books), up to a
    #: whole GPU; None: its peak load. Only the request-booking baseline reads it.
    request: float | None = Field(default=None, gt=0, le=1)

    @classmethod
    def from_job(cls, job: Job, slots: int = DEFAULT_SLOTS, **kw: object) -> Workload:
        return cls(id=job.id, load=job.load_profile(slots), num_gpu=job.num_gpu,
                   gpu_mem_mib=job.gpu_mem_mib, gpu_models=job.gpu_models,
                   request=job.gpu_share, **kw)


@dataclass
class PackProblem:
    """Workloads and GPUs as flat numpy arrays (GPUs indexed globally, node by node)."""

    ids: list[str]
    load: np.ndarray        # (W, T) float per-GPU load
    units: np.ndarray       # (W, T) int64: ceil(load * SCALE), or cap if exclusive
    exclusive: np.ndarray   # (W,) bool
    num_gpu: np.ndarray     # (W,)
    mem: np.ndarray         # (W,)
    models: list[tuple[str, ...]]
    fixed: dict[int, tuple[int, ...]]
    current: dict[int, tuple[int, ...]]
    node_names: list[str]
    node_first: np.ndarray  # (N,) first global GPU index of each node
    node_count: np.ndarray  # (N,)
    gpu_node: np.ndarray    # (G,)
    gpu_local: np.ndarray   # (G,)
    gpu_model: list[str]
    gpu_mem: np.ndarray     # (G,)
    gpu_price: np.ndarray   # (G,) per GPU-hour
    cap: int
    headroom: float
    slots: int
    request: np.ndarray | None = None  # (W,) requested share of each GPU, in (0, 1]
    allowed_cache: dict[tuple, np.ndarray] = field(default_factory=dict)

    @property
    def n_items(self) -> int:
        return len(self.ids)

    @property
    def n_gpus(self) -> int:
        return len(self.gpu_node)

    def allowed(self, i: int) -> np.ndarray:
        """(G,) GPUs workload i may use (model and memory), ignoring what else is there."""
        key = (int(self.mem[i]), self.models[i])
        a = self.allowed_cache.get(key)
        if a is None:
            a = self.gpu_mem >= self.mem[i]
            if self.models[i]:
                a &= np.isin(np.array(self.gpu_model), list(self.models[i]))
            self.allowed_cache[key] = a
        return a

    def gpu_of(self, node: str, gpus: Sequence[int]) -> tuple[int, ...]:
        try:
            n = self.node_names.index(node)
        except ValueError:
            raise InputError(f"unknown node {node!r}", field="placement") from None
        if any(g < 0 or g >= self.node_count[n] for g in gpus):
            raise InputError(f"node {node!r} has no GPU {list(gpus)}", field="placement")
        return tuple(int(self.node_first[n] + g) for g in gpus)


def build_problem(workloads: Sequence[Workload], cluster: Cluster, headroom: float = 0.1,
                  slots: int | None = None) -> PackProblem:
    """Flatten workloads and cluster; reject workloads that can never fit (InputError)."""
    if not 0 <= headroom < 1:
        raise InputError(f"headroom must be in [0, 1), got {headroom}", field="headroom")
    if slots is None:
        slots = len(workloads[0].load) if workloads else DEFAULT_SLOTS
    nodes = [n for n in cluster.nodes if n.gpu_count > 0]
    counts = np.array([n.gpu_count for n in nodes], dtype=np.int64)
    first = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
    gpu_node = np.repeat(np.arange(len(nodes)), counts)
    gpu_local = np.arange(int(counts.sum())) - first[gpu_node] if len(nodes) else np.zeros(0, int)
    gpu_model = [nodes[n].gpu_model for n in gpu_node]
    gpu_mem = np.array([nodes[n].gpu_memory_mib for n in gpu_node], dtype=np.int64)
    gpu_price = np.array([cluster.price_of(nodes[n].gpu_model) for n in gpu_node])
    cap = int(math.floor((1.0 - headroom) * SCALE + 1e-9))
    w = len(workloads)
    load = np.zeros((w, slots))
    for i, wl in enumerate(workloads):
        if len(wl.load) != slots:
            raise InputError(f"workload {wl.id!r} has {len(wl.load)} slots, expected {slots}",
                             field="profile")
        load[i] = wl.load
    if w and (not np.isfinite(load).all() or load.min() < 0 or load.max() > 1):
        bad = workloads[int(np.argmax(~np.isfinite(load).all(axis=1) | (load.min(axis=1) < 0)
                                      | (load.max(axis=1) > 1)))].id
        raise InputError(f"workload {bad!r}: load must be between 0 and 1", field="profile")
    units = np.ceil(load * SCALE - 1e-6).astype(np.int64)
    exclusive = units.max(axis=1, initial=0) > cap
    units[exclusive] = cap
    prob = PackProblem(
        ids=[wl.id for wl in workloads], load=load, units=units, exclusive=exclusive,
        num_gpu=np.array([wl.num_gpu for wl in workloads], dtype=np.int64),
        mem=np.array([wl.gpu_mem_mib for wl in workloads], dtype=np.int64),
        models=[wl.gpu_models for wl in workloads], fixed={}, current={},
        node_names=[n.name for n in nodes], node_first=first, node_count=counts,
        gpu_node=gpu_node, gpu_local=gpu_local, gpu_model=gpu_model, gpu_mem=gpu_mem,
        gpu_price=gpu_price, cap=cap, headroom=headroom, slots=slots,
        request=np.array([wl.request if wl.request is not None else float(wl.load.max(initial=0))
                          for wl in workloads]))
    if len(set(prob.ids)) != w:
        dup = next(x for x in prob.ids if prob.ids.count(x) > 1)
        raise InputError(f"duplicate workload id {dup!r}", field="id")
    max_node = int(counts.max(initial=0))
    for i, wl in enumerate(workloads):
        _check_can_fit(prob, i, wl, max_node)
        for attr, target in (("fixed", prob.fixed), ("current", prob.current)):
            where = getattr(wl, attr)
            if where is not None:
                gpus = prob.gpu_of(where[0], where[1])
                if len(gpus) != wl.num_gpu or len(set(gpus)) != len(gpus):
                    raise InputError(f"workload {wl.id!r}: {attr} placement needs "
                                     f"{wl.num_gpu} distinct GPU(s)", field=attr)
                target[i] = gpus
    return prob


def _check_can_fit(prob: PackProblem, i: int, wl: Workload, max_node: int) -> None:
    """Infeasible input is a user error that names the workload and why."""
    if prob.n_gpus == 0:
        raise InputError("the cluster has no GPUs", field="cluster")
    if wl.num_gpu > max_node:
        raise InputError(f"workload {wl.id!r} needs {wl.num_gpu} GPUs on one node; the "
                         f"largest node has {max_node}", field="num_gpu")
    if wl.gpu_models and not set(wl.gpu_models) & set(prob.gpu_model):
        raise InputError(f"workload {wl.id!r} needs GPU model {'|'.join(wl.gpu_models)}, "
                         f"which no node has", field="gpu_model")
    ok = prob.allowed(i)
    if not ok.any():
        raise InputError(f"workload {wl.id!r} needs {wl.gpu_mem_mib} MiB of GPU memory; the "
                         f"largest allowed GPU has {int(prob.gpu_mem.max())} MiB",
                         field="gpu_mem_mib")
    per_node = np.bincount(prob.gpu_node[ok], minlength=len(prob.node_names))
    if per_node.max() < wl.num_gpu:
        raise InputError(f"workload {wl.id!r} needs {wl.num_gpu} suitable GPUs on one node; "
                         f"no node has that many", field="num_gpu")
