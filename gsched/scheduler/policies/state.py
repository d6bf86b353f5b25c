"""Cluster state as numpy arrays: the snapshot every policy reads.

The simulator and the extender each own a `ClusterState` and mutate it only through
`allocate` / `release`. GPUs are laid out as a padded (nodes x max_gpus) grid so a policy
can test one job against every node in a few vector operations; padding GPUs have
`free = -1` so nothing ever fits on them.

Two views of load are kept side by side:
- `free` is what is left after *reservations* (requests, or peaks, or whatever the
  policy booked) - the Kubernetes view;
- `load` is the expected load per time-of-day slot, the sum of the placed jobs' daily
  profiles - the tidal view, used by the tidal policy and by every metric.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from gsched.models import DAY_SECONDS, DEFAULT_SLOTS, Cluster, Job

EPS = 1e-9

_INDEX: dict[tuple[int, ...], np.ndarray] = {}


def gpu_index(gpus: tuple[int, ...] | list[int] | np.ndarray) -> np.ndarray:
    """GPU indices as the int64 array the kernels take (one compiled version for any
    number of GPUs), kept per tuple: a replay uses the same few hundred over and over.
    An int64 array is taken as it is."""
    if type(gpus) is np.ndarray and gpus.dtype == np.int64:
        return gpus
    key = gpus if type(gpus) is tuple else tuple(int(g) for g in gpus)
    index = _INDEX.get(key)
    if index is None:
        index = np.array(key, dtype=np.int64)
        index.flags.writeable = False
        if len(_INDEX) < 65_536:  # (bounded: orders of up to 16 GPUs are few in practice)
            _INDEX[key] = index
    return index


class Reason(IntEnum):
    """Why a job does not fit a node; 0 means it fits."""

    FITS = 0
    GPU_MODEL = 1
    GPU_COUNT = 2
    GPU_MEMORY = 3
    CPU = 4
    MEMORY = 5
    GPU_FREE = 6
    GPU_SHARE = 7
    PROFILE = 8

    @property
    def message(self) -> str:
        return _REASON_TEXT[self]


_REASON_TEXT = {
    Reason.FITS: "fits",
    Reason.GPU_MODEL: "GPU model not allowed by the job",
    Reason.GPU_COUNT: "node has fewer GPUs than the job needs",
    Reason.GPU_MEMORY: "GPU memory too small for the job",
    Reason.CPU: "not enough free CPU",
    Reason.MEMORY: "not enough free memory",
    Reason.GPU_FREE: "not enough free whole GPUs",
    Reason.GPU_SHARE: "no GPU has enough free share",
    Reason.PROFILE: "daily load would exceed GPU capacity minus headroom in some slot",
}


@dataclass(frozen=True)
class Placement:
    """Where a job goes: a node index and the GPU indices on that node."""

    node: int
    gpus: tuple[int, ...]
    reserved: float  # share reserved on each of those GPUs


@dataclass(frozen=True)
class NoFit:
    """The job fits nowhere; `reasons` counts nodes by the first reason they failed."""

    reasons: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        if not self.reasons:
            return "no nodes"
        return "; ".join(f"{n} node(s): {r}" for r, n in sorted(self.reasons.items(),
                                                                key=lambda kv: -kv[1]))


@dataclass
class Running:
    """A job placed on the cluster (what `release` needs to undo it)."""

    job: Job
    placement: Placement
    load: np.ndarray  # per-GPU load profile it added (T,)


class ClusterState:
    """Mutable cluster snapshot; see the module docstring."""

    def __init__(self, cluster: Cluster, slots: int = DEFAULT_SLOTS) -> None:
        self.cluster = cluster
        self.slots = slots
        # the compiled allocate/release (numba), imported with the first state: a process
        # that never builds one does not pay numba's import
        from gsched.scheduler.policies import state_kernels

        self._kernels = state_kernels
        nodes = cluster.nodes
        n = len(nodes)
        self.n_nodes = n
        self.max_gpus = max((nd.gpu_count for nd in nodes), default=0) or 1
        self.node_names = [nd.name for nd in nodes]
        self.node_index = {nd.name: i for i, nd in enumerate(nodes)}
        self.gpu_count = np.array([nd.gpu_count for nd in nodes], dtype=np.int64)
        self.gpu_counts: list[int] = self.gpu_count.tolist()
        self.gpu_valid = np.arange(self.max_gpus)[None, :] < self.gpu_count[:, None]
        self.gpu_mem_total = np.array([nd.gpu_memory_mib for nd in nodes], dtype=np.float64)
        self.cpu_total = np.array([nd.cpu_milli for nd in nodes], dtype=np.float64)
        self.mem_total = np.array([nd.memory_mib for nd in nodes], dtype=np.float64)
        models = sorted({nd.gpu_model for nd in nodes})
        self.model_names = models
        self.model_id = {m: i for i, m in enumerate(models)}
        self.node_model = np.array([self.model_id[nd.gpu_model] for nd in nodes], dtype=np.int64)
        self.node_price = np.array([cluster.price_of(nd.gpu_model) for nd in nodes])
        # Nodes that declare no CPU/memory are not limited by them.
        self.cpu_unlimited = self.cpu_total <= 0
        self.mem_unlimited = self.mem_total <= 0
        self.any_cpu_limit = not self.cpu_unlimited.all()
        self.any_mem_limit = not self.mem_unlimited.all()
        self.has_gpus = self.gpu_count > 0
        self.all_have_gpus = bool(self.has_gpus.all())
        self.gpu_count_or_1 = np.maximum(self.gpu_count, 1)
        g_max = self.max_gpus
        # The per-GPU arrays are views of a few packed ones (`_gpu_f`, `_gpu_i`, `_loads`,
        # `_agg`), so the compiled kernels take five arrays, not twelve; they are only
        # ever updated in place, never rebound.
        self._gpu_f = np.empty((3, n, g_max), dtype=np.float64)
        self.free = self._gpu_f[0]
        self.free[:] = np.where(self.gpu_valid, 1.0, -1.0)
        self.gpu_mem_free = self._gpu_f[1]
        self.gpu_mem_free[:] = np.where(self.gpu_valid, self.gpu_mem_total[:, None], -1.0)
        self.cpu_free = self.cpu_total.copy()
        self.mem_free = self.mem_total.copy()
        self._loads = np.zeros((2, n, g_max, slots), dtype=np.float64)
        self.load = self._loads[0]
        #: the part of `load` from preemptible jobs (the tidal policy can move it out).
        self.preemptible_load = self._loads[1]
        #: the part of the reservations held by preemptible jobs (what eviction can free).
        self.preemptible_reserved = self._gpu_f[2]
        self.preemptible_reserved[:] = 0.0
        #: ids of the jobs on each node, in start order.
        self.node_jobs: list[dict[str, None]] = [{} for _ in range(n)]
        self._gpu_i = np.zeros((3, n, g_max), dtype=np.int64)
        self.jobs_on_gpu = self._gpu_i[0]
        self.inference_on_gpu = self._gpu_i[1]
        #: inference whose load is a forecast (a daily profile): what headroom guards
        self.forecast_on_gpu = self._gpu_i[2]
        self.running: dict[str, Running] = {}
        # -- per-node aggregates, refreshed from the node's row whenever it changes -------
        # (`state_kernels.refresh_node`; the same sum as `sum(axis=1)` over the grid, so
        # they equal a from-scratch computation bit for bit, never a running float sum)
        self._agg = np.zeros((g_max + 1, n), dtype=np.float64)
        #: `kth_free[k - 1, n]`: node n's k-th largest free share (padding GPUs hold -1): a
        #: node has k GPUs with at least x free exactly when `kth_free[k - 1, n] >= x`
        #: (GPU-major, so one k is a contiguous vector over nodes)
        self.kth_free = self._agg[:g_max]
        self.kth_free[:] = np.sort(self.free, axis=1)[:, ::-1].T
        #: reserved share per node: what `node_gpu_alloc` returns, without the grid scan.
        self.node_alloc = self._agg[g_max]
        self._keys: dict[int, tuple[int, bytes]] = {}  # node -> (version, node_key)
        #: bumped whenever a node changes, so policies can cache per-node work.
        self.node_version = np.zeros(n, dtype=np.int64)
        self._static: dict[tuple, np.ndarray] = {}
        #: wall or simulated clock (seconds); drivers keep it current for time-aware policies.
        self.now = 0.0
        # -- the tidal loop (issue 13): data its drivers hand the policies ---------------
        #: GPUs the load guard closed to new work: measured load is over the safe line.
        self.blocked = np.zeros((n, self.max_gpus), dtype=bool)
        #: the current CP-SAT plan: job id -> (node index, GPU indices) it should run on.
        self.plan: dict[str, tuple[int, tuple[int, ...]]] = {}

    @property
    def slot_seconds(self) -> float:
        return DAY_SECONDS / self.slots

    @property
    def current_slot(self) -> int:
        """Time-of-day slot that `now` falls in."""
        return int((self.now % DAY_SECONDS) // self.slot_seconds) % self.slots

    # ------------------------------------------------------------------ queries
    @property
    def total_gpus(self) -> int:
        return int(self.gpu_count.sum())

    def model_mask(self, job: Job) -> np.ndarray:
        """Nodes whose GPU model the job accepts."""
        if not job.gpu_models:
            return np.ones(self.n_nodes, dtype=bool)
        ids = [self.model_id[m] for m in job.gpu_models if m in self.model_id]
        return np.isin(self.node_model, ids)

    def static_fit(self, job: Job) -> np.ndarray:
        """Nodes the job could use if they were empty (can it *ever* run there?)."""
        mask = self.model_mask(job)
        if job.num_gpu:
            mask &= self.gpu_count >= job.num_gpu
            mask &= self.gpu_mem_total >= job.gpu_mem_mib
        mask &= self.cpu_unlimited | (self.cpu_total >= job.cpu_milli)
        mask &= self.mem_unlimited | (self.mem_total >= job.memory_mib)
        return mask

    def static_mask(self, job: Job) -> np.ndarray:
        """`static_fit`, cached per job shape (it never changes for a given cluster)."""
        key = (job.gpu_models, job.num_gpu, job.gpu_mem_mib, job.cpu_milli, job.memory_mib)
        mask = self._static.get(key)
        if mask is None:
            mask = self._static[key] = self.static_fit(job)
        return mask

    def fit_mask(self, job: Job, reserve: float, nodes: np.ndarray | None = None) -> np.ndarray:
        """Nodes that can take the job now: `fit_reasons(...) == 0`, computed faster.

        With `nodes` (indices), only those rows, in that order: a driver that knows which
        nodes changed since a job last failed to fit asks about those alone.
        """
        def rows(a: np.ndarray) -> np.ndarray:
            return a if nodes is None else a[nodes]

        mask = self.static_mask(job)
        if (job.num_gpu and not job.cpu_milli and not job.memory_mib and not job.gpu_mem_mib
                and job.num_gpu <= self.max_gpus and not np.count_nonzero(self.blocked)):
            # the common GPU job: the k-th largest free share of a node says it all
            col = self.kth_free[job.num_gpu - 1]
            if nodes is None:
                return mask & (col >= reserve - EPS)
            return mask[nodes] & (col[nodes] >= reserve - EPS)
        mask = mask.copy() if nodes is None else mask[nodes]
        if job.cpu_milli:
            mask &= rows(self.cpu_unlimited) | (rows(self.cpu_free) >= job.cpu_milli - EPS)
        if job.memory_mib:
            mask &= rows(self.mem_unlimited) | (rows(self.mem_free) >= job.memory_mib - EPS)
        if not job.num_gpu:
            return mask
        if not job.gpu_mem_mib and not np.count_nonzero(self.blocked):
            # GPUs fit on share alone: the k-th largest free share of a node says it.
            if job.num_gpu > self.max_gpus:
                mask[:] = False
            else:
                mask &= rows(self.kth_free[job.num_gpu - 1]) >= reserve - EPS
            return mask
        ok = (rows(self.free) >= reserve - EPS) & ~rows(self.blocked)
        if job.gpu_mem_mib:
            ok &= rows(self.gpu_mem_free) >= job.gpu_mem_mib
        if job.num_gpu == 1:
            mask &= ok.any(axis=1)
        else:
            mask &= ok.sum(axis=1) >= job.num_gpu
        return mask

    def gpu_fit(self, job: Job, reserve: float) -> np.ndarray:
        """(nodes x gpus) mask of GPUs that can take `reserve` share and the job's memory."""
        return ((self.free >= reserve - EPS) & (self.gpu_mem_free >= job.gpu_mem_mib)
                & ~self.blocked)

    def fit_reasons(self, job: Job, reserve: float, nodes: np.ndarray | None = None
                    ) -> np.ndarray:
        """Reason code per node (0 = fits now) for reserving `reserve` per GPU; with
        `nodes` (indices), of those rows only, in that order."""
        def rows(a: np.ndarray) -> np.ndarray:
            return a if nodes is None else a[nodes]

        reasons = np.zeros(self.n_nodes if nodes is None else len(nodes), dtype=np.int8)

        def mark(bad: np.ndarray, why: Reason) -> None:
            reasons[(reasons == 0) & bad] = why

        mark(~rows(self.model_mask(job)), Reason.GPU_MODEL)
        if job.num_gpu:
            mark(rows(self.gpu_count) < job.num_gpu, Reason.GPU_COUNT)
            mark(rows(self.gpu_mem_total) < job.gpu_mem_mib, Reason.GPU_MEMORY)
        mark(~rows(self.cpu_unlimited) & (rows(self.cpu_free) < job.cpu_milli - EPS),
             Reason.CPU)
        mark(~rows(self.mem_unlimited) & (rows(self.mem_free) < job.memory_mib - EPS),
             Reason.MEMORY)
        if job.num_gpu:
            fit = ((rows(self.free) >= reserve - EPS)
                   & (rows(self.gpu_mem_free) >= job.gpu_mem_mib) & ~rows(self.blocked))
            usable = fit.sum(axis=1)
            why = Reason.GPU_FREE if reserve >= 1 - EPS else Reason.GPU_SHARE
            mark(usable < job.num_gpu, why)
        return reasons

    def node_gpu_alloc(self) -> np.ndarray:
        """Reserved share per node (sum over its GPUs), kept per node (`node_alloc`)."""
        return self.node_alloc.copy()

    def fitting_gpus(self, job: Job, reserve: float, n: int) -> list[int]:
        """Node n's GPUs that can take `reserve` share and the job's memory, in index
        order: `flatnonzero(gpu_fit_row(...))` in plain Python (a node has a few GPUs, and
        a handful of numpy calls on 8 values cost more than the loop)."""
        free, mem = self.free[n].tolist(), self.gpu_mem_free[n].tolist()
        blocked = self.blocked[n].tolist()
        floor, need = reserve - EPS, job.gpu_mem_mib
        return [g for g in range(self.gpu_counts[n])
                if free[g] >= floor and mem[g] >= need and not blocked[g]]

    def gpu_fit_row(self, job: Job, reserve: float, n: int) -> np.ndarray:
        """`gpu_fit(job, reserve)[n] & gpu_valid[n]`: node n's GPUs that can take the job,
        without computing the mask over the whole grid."""
        return ((self.free[n] >= reserve - EPS) & (self.gpu_mem_free[n] >= job.gpu_mem_mib)
                & ~self.blocked[n] & self.gpu_valid[n])

    def allocated_gpus(self) -> float:
        return float(np.where(self.gpu_valid, 1.0 - self.free, 0.0).sum())

    # --------------------------------------------------------------- mutations
    def allocate(self, job: Job, placement: Placement, load: np.ndarray | None = None) -> None:
        """Book `placement` for `job`. `load` is its per-GPU daily load (defaults to profile).

        The GPU arrays and the node's aggregates change in one compiled call
        (`state_kernels.book`: the same arithmetic as numpy's, bit for bit)."""
        if job.id in self.running:
            raise ValueError(f"job {job.id} is already placed")
        if load is None:
            load = job.load_profile(self.slots) if job.num_gpu else np.zeros(self.slots)
        n, gpus = placement.node, placement.gpus
        if gpus:
            load = self._checked_load(load)
            self._kernels.book(
                self._gpu_f, self._gpu_i, self._loads, self._agg, self.node_version,
                self.gpu_valid, n, gpu_index(gpus), float(placement.reserved),
                float(job.gpu_mem_mib), load, job.preemptible, job.kind == "inference",
                job.profile is not None)
        else:
            self.node_version[n] += 1
        if job.cpu_milli:
            self.cpu_free[n] -= job.cpu_milli
        if job.memory_mib:
            self.mem_free[n] -= job.memory_mib
        self.running[job.id] = Running(job, placement, load)
        self.node_jobs[n][job.id] = None

    def release(self, job_id: str) -> Running:
        """Undo a placement; returns what was released (`state_kernels.unbook`)."""
        r = self.running.pop(job_id)
        n, gpus = r.placement.node, r.placement.gpus
        del self.node_jobs[n][job_id]
        job = r.job
        if gpus:
            self._kernels.unbook(
                self._gpu_f, self._gpu_i, self._loads, self._agg, self.node_version,
                self.gpu_valid, self.gpu_mem_total, n, gpu_index(gpus),
                float(r.placement.reserved), float(job.gpu_mem_mib), r.load,
                job.preemptible, job.kind == "inference", job.profile is not None)
        else:
            self.node_version[n] += 1
        if job.cpu_milli:
            self.cpu_free[n] += job.cpu_milli
        if job.memory_mib:
            self.mem_free[n] += job.memory_mib
        return r

    def rebook(self, job_id: str, load: np.ndarray) -> None:
        """Change a running job's booked daily load where it runs (a forecast corrected
        in flight, e.g. shifted because the day runs late)."""
        r = self.running[job_id]
        n, gpus = r.placement.node, list(r.placement.gpus)
        load = self._checked_load(load)
        if gpus:
            delta = load - r.load
            self.load[n, gpus] += delta
            if r.job.preemptible:
                self.preemptible_load[n, gpus] += delta
            self.node_version[n] += 1
        r.load = load

    def _checked_load(self, load: np.ndarray) -> np.ndarray:
        """The compiled kernels index without bounds checks: a profile must be an array
        of one value per slot."""
        if type(load) is not np.ndarray:
            load = np.asarray(load, dtype=np.float64)
        if load.shape != (self.slots,):
            raise ValueError(f"a job's load must have {self.slots} slots, got shape "
                             f"{load.shape}")
        return load

    def node_key(self, n: int) -> bytes:
        """Node n's request view as bytes (free shares with padding, GPU memory, CPU,
        memory): equal keys mean equal rows, so a policy can remember its answers by
        node state. Cached per node version."""
        version = self.node_version.item(n)
        hit = self._keys.get(n)
        if hit is not None and hit[0] == version:
            return hit[1]
        key = b"".join((self.free[n].tobytes(), self.gpu_mem_free[n].tobytes(),
                        self.cpu_free[n:n + 1].tobytes(), self.mem_free[n:n + 1].tobytes()))
        self._keys[n] = (version, key)
        return key
