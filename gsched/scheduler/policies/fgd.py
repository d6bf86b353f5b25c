"""`fgd-exact`: fragmentation gradient descent (Weng et al., USENIX ATC'23, "Beware of
Fragmentation: Scheduling GPU-Sharing Workloads with Fragmentation Gradient Descent"),
ranked by the exact fragmentation delta. The paper's own scoring is `fgd`
(`fgd_paper.py`); docs/policies.md says how the two differ.

The target workload is a distribution M of task types m (CPU request, per-GPU share,
GPU count) with popularity p_m. For a node n and a task type m, F_n(m) is the free GPU
capacity of n that m cannot use:
- if m cannot run on n at all (not enough CPU, or too few GPUs with room for it),
  every free GPU share of n is fragmented;
- otherwise, the free share of each GPU whose remaining capacity is below m's per-GPU
  demand min(d_m, 1) is fragmented (a GPU-less task fragments nothing).
F_n(M) = sum_m p_m F_n(m). A job goes where (node, GPUs) increases F_n(M) the least.

Only the node a placement touches changes, so the best move per node is cached per job
shape and recomputed only for nodes whose `node_version` moved; nodes with identical
state are computed once (most of a fresh cluster is a handful of node types).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from gsched.models import Job
from gsched.scheduler.policies.policy import Policy, PolicyConfig
from gsched.scheduler.policies.state import EPS, ClusterState

MAX_TASK_TYPES = 128


@dataclass(frozen=True)
class TaskTypes:
    """The target workload: per type, per-GPU demand, GPU count, CPU, popularity."""

    demand: np.ndarray  # (M,) per-GPU share, 0 for CPU-only
    count: np.ndarray   # (M,) GPUs needed
    cpu: np.ndarray     # (M,) milli-CPU
    weight: np.ndarray  # (M,) popularity, sums to 1

    @classmethod
    def from_jobs(cls, jobs: list[Job]) -> TaskTypes:
        counts = Counter((j.gpu_share if j.num_gpu else 0.0, j.num_gpu, j.cpu_milli) for j in jobs)
        if not counts:
            counts = Counter({(1.0, 1, 0): 1})
        common = counts.most_common(MAX_TASK_TYPES)
        arr = np.array([k for k, _ in common], dtype=np.float64)
        w = np.array([c for _, c in common], dtype=np.float64)
        return cls(arr[:, 0], arr[:, 1], arr[:, 2], w / w.sum())

    def __post_init__(self) -> None:
        # Many types share a per-GPU demand (they differ in CPU): the per-GPU work is
        # done once per distinct demand and gathered per type.
        levels, index = np.unique(self.demand, return_inverse=True)
        object.__setattr__(self, "_levels", levels)
        object.__setattr__(self, "_index", index.reshape(-1))

    def fragmentation(self, free: np.ndarray, cpu_free: np.ndarray,
                      cpu_unlimited: np.ndarray) -> np.ndarray:
        """F_n(M) for each row of `free` (rows x gpus; padding GPUs hold -1)."""
        levels, index = self._levels, self._index  # type: ignore[attr-defined]
        f = free[:, :, None]
        d = levels[None, None, :]
        valid = f >= 0
        fits = f >= d - EPS
        room = (fits & valid & (d > 0)).sum(axis=1)            # (rows, D)
        stuck = np.where(valid & ~fits, f, 0.0).sum(axis=1)    # (rows, D)
        enough_gpus = room[:, index] >= self.count[None, :]
        enough_cpu = cpu_unlimited[:, None] | (cpu_free[:, None] >= self.cpu[None, :] - EPS)
        total = np.clip(free, 0.0, None).sum(axis=1)[:, None]
        per_type = np.where(enough_gpus & enough_cpu, stuck[:, index], total)
        return per_type @ self.weight


@dataclass
class _Cache:
    version: np.ndarray
    delta: np.ndarray
    gpus: list[tuple[int, ...]]


class ExactFGDPolicy(Policy):
    """Place each job where it grows expected fragmentation the least (exact delta)."""

    name = "fgd-exact"

    def __init__(self, config: PolicyConfig | None = None) -> None:
        super().__init__(config)
        self.types = TaskTypes.from_jobs(self.config.workload)
        self._cache: dict[tuple, _Cache] = {}

    def set_workload(self, jobs: list[Job]) -> None:
        """Replace the target workload (the extender refreshes it from live pods)."""
        self.types = TaskTypes.from_jobs(jobs)
        self._cache.clear()

    def score(self, state: ClusterState, job: Job, feasible: np.ndarray) -> np.ndarray:
        return -self._deltas(state, job).delta

    def choose_gpus(self, state: ClusterState, job: Job, node: int) -> tuple[int, ...]:
        return self._deltas(state, job).gpus[node]

    # ------------------------------------------------------------------ internals
    def _deltas(self, state: ClusterState, job: Job) -> _Cache:
        key = (job.shape_key(), id(state))
        cache = self._cache.get(key)
        if cache is None:
            cache = _Cache(np.full(state.n_nodes, -1, dtype=np.int64),
                           np.full(state.n_nodes, np.inf), [()] * state.n_nodes)
            self._cache[key] = cache
        stale = np.flatnonzero(cache.version != state.node_version)
        if len(stale):
            delta, gpus = self._compute(state, job, stale)
            cache.delta[stale] = delta
            for i, n in enumerate(stale):
                cache.gpus[n] = gpus[i]
            cache.version[stale] = state.node_version[stale]
        return cache

    def _compute(self, state: ClusterState, job: Job,
                 nodes: np.ndarray) -> tuple[np.ndarray, list[tuple[int, ...]]]:
        """Best (delta, GPUs) for each node in `nodes`, computed once per distinct state."""
        free = state.free[nodes]
        gmem = state.gpu_mem_free[nodes]
        cpu = state.cpu_free[nodes]
        unl = state.cpu_unlimited[nodes]
        if len(nodes) > 16:  # dedupe identical node states; not worth it for a few
            sig = np.concatenate([free, gmem, cpu[:, None], unl[:, None]], axis=1)
            _, first, inverse = np.unique(sig, axis=0, return_index=True, return_inverse=True)
            inverse = inverse.reshape(-1)
        else:
            first = inverse = np.arange(len(nodes))
        u_free, u_gmem, u_cpu, u_unl = free[first], gmem[first], cpu[first], unl[first]
        base = self.types.fragmentation(u_free, u_cpu, u_unl)
        new_cpu = u_cpu - job.cpu_milli
        share, k = job.gpu_share, job.num_gpu
        rows_n = len(first)
        u_delta = np.full(rows_n, np.inf)
        u_gpus: list[tuple[int, ...]] = [()] * rows_n
        fits = (u_free >= share - EPS) & (u_gmem >= job.gpu_mem_mib)
        if k == 0:
            u_delta = self.types.fragmentation(u_free, new_cpu, u_unl) - base
        elif k == 1:
            # One candidate per GPU: frag after taking `share` from that GPU.
            rows, g = u_free.shape
            cand = np.repeat(u_free[:, None, :], g, axis=1)  # (rows, g, g)
            eye = np.eye(g, dtype=bool)[None]
            cand = np.where(eye, cand - share, cand)
            after = self.types.fragmentation(cand.reshape(rows * g, g), np.repeat(new_cpu, g),
                                             np.repeat(u_unl, g)).reshape(rows, g)
            after = np.where(fits, after, np.inf)
            best = np.argmin(after, axis=1)
            u_delta = after[np.arange(rows), best] - base
            u_gpus = [(int(b),) for b in best]
        else:
            # Whole GPUs: which k fully free GPUs does not change F; take the lowest.
            whole = fits & (u_free >= 1.0 - EPS)
            cand = u_free.copy()
            for r in range(rows_n):
                idx = np.flatnonzero(whole[r])[:k]
                if len(idx) == k:
                    cand[r, idx] = 0.0
                    u_gpus[r] = tuple(int(i) for i in idx)
            after = self.types.fragmentation(cand, new_cpu, u_unl)
            ok = np.array([len(x) == k for x in u_gpus])
            u_delta = np.where(ok, after - base, np.inf)
        u_delta = np.where(np.isfinite(u_delta), u_delta, np.inf)
        return u_delta[inverse], [u_gpus[i] for i in inverse]
