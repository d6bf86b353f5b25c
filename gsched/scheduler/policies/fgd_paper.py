"""`fgd`: fragmentation gradient descent exactly as the paper's artifact scores it.

Weng et al., "Beware of Fragmentation" (USENIX ATC'23); the artifact is the FGDScore
plugin of the public `hkust-adsl/kubernetes-scheduler-simulator`. What it does:

- Target workload: the most popular pod shapes (CPU, milli-GPU, GPU count, GPU model;
  not memory) that together cover 95% of the pods, CPU-only shapes included, weighted
  by popularity and renormalised over the kept shapes.
- F_n(m), the free milli-GPU of node n that shape m cannot use: for a CPU-only shape,
  all of it (whether or not the CPU fits); for a GPU shape whose GPU model, CPU and GPUs
  fit, the free milli-GPU of each GPU with less left than m's per-GPU demand; otherwise
  all of it. F_n = sum_m p_m F_n(m).
- Score: `int(sigmoid(dF / 1000) * 100)`, dF = F before minus F after placement, in
  milli-GPU (not normalised). A shared pod tries each GPU that fits and takes the first
  with the best integer score; other pods take the tightest GPUs (whole GPUs: the
  lowest-index free ones); CPU-only pods only change the node's CPU.

Most placements tie under the integer score; `policy.place` then takes the first node in
node order, as the artifact's scheduler takes the smallest node name. `fgd-exact`
(`fgd.py`) is gsched's own variant that ranks by the exact dF.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from gsched.models import Job
from gsched.scheduler.policies.milli import (
    MAX_NODE_SCORE,
    MAX_SPEC_CPU,
    MILLI,
    is_shared,
    job_milli,
)
from gsched.scheduler.policies.policy import Policy, PolicyConfig
from gsched.scheduler.policies.state import EPS, ClusterState

POPULARITY = 0.95


@dataclass(frozen=True)
class TargetPods:
    """The artifact's typical pods: per shape its CPU, milli-GPU, GPU count, models and
    popularity (sums to 1)."""

    cpu: np.ndarray     # (M,) milli-CPU
    milli: np.ndarray   # (M,) milli-GPU per GPU, 0 for CPU-only
    count: np.ndarray   # (M,) GPUs
    models: tuple[tuple[str, ...], ...]
    weight: np.ndarray  # (M,)

    @classmethod
    def from_jobs(cls, jobs: list[Job], popularity: float = POPULARITY,
                  demand: Callable[[Job], int] = job_milli) -> TargetPods:
        """Shapes keyed on CPU, `demand` (milli-GPU per GPU: the request by default),
        GPU count and models."""
        counts = Counter((j.cpu_milli, demand(j), j.num_gpu, j.gpu_models) for j in jobs)
        if not counts:
            counts = Counter({(0, MILLI, 1, ()): 1})
        # most popular first; equal counts: the larger shape first (the artifact's order)
        ranked = sorted(counts.items(), key=lambda kv: (kv[1], kv[0][:3], "|".join(kv[0][3])),
                        reverse=True)
        total = sum(counts.values())
        kept, cum = [], 0
        for shape, c in ranked:
            if cum >= popularity * total:
                break
            kept.append((shape, c))
            cum += c
        w = np.array([c for _, c in kept], dtype=np.float64)
        return cls(cpu=np.array([s[0] for s, _ in kept], dtype=np.float64),
                   milli=np.array([s[1] for s, _ in kept], dtype=np.int64),
                   count=np.array([s[2] for s, _ in kept], dtype=np.int64),
                   models=tuple(s[3] for s, _ in kept), weight=w / w.sum())

    def __post_init__(self) -> None:
        # GPU shapes share a few per-GPU demands: the per-GPU work is done per demand
        gpu_types = np.flatnonzero(self.milli > 0)
        levels, inv = np.unique(self.milli[gpu_types], return_inverse=True)
        object.__setattr__(self, "_gpu", (gpu_types, levels, inv.reshape(-1),
                                          self.count[gpu_types], self.cpu[gpu_types],
                                          self.weight[gpu_types]))
        object.__setattr__(self, "_cpu_weight", float(self.weight[self.milli == 0].sum()))

    def access(self, model_names: list[str]) -> np.ndarray:
        """(M, models) whether each shape may run on each GPU model."""
        return np.array([[not ms or name in ms for name in model_names]
                         for ms in self.models], dtype=bool).reshape(len(self.models), -1)

    def fragmentation(self, left: np.ndarray, cpu: np.ndarray, access: np.ndarray
                      ) -> np.ndarray:
        """F per row: `left` (rows, gpus) milli-GPU with -1 padding, `cpu` (rows,) milli-CPU
        free, `access` (rows, M) whether each shape may use the row's GPU model."""
        total = np.clip(left, 0, None).sum(axis=1).astype(np.float64)
        gpu_types, levels, inv, count, cpu_req, w = self._gpu  # type: ignore[attr-defined]
        frag = total * self._cpu_weight  # type: ignore[attr-defined]
        if not len(gpu_types):
            return frag
        f = left[:, :, None]
        fits = f >= levels[None, None, :]
        room = fits.sum(axis=1)                                              # (rows, L)
        stuck = np.where((f >= 0) & ~fits, f, 0).sum(axis=1).astype(np.float64)
        ok = (room[:, inv] >= count) & (cpu[:, None] >= cpu_req) & access[:, gpu_types]
        return frag + np.where(ok, stuck[:, inv], total[:, None]) @ w


def sigmoid_score(delta: np.ndarray) -> np.ndarray:
    """`int(sigmoid(dF / 1000) * 100)`, dF in milli-GPU."""
    return np.trunc(1.0 / (1.0 + np.exp(-delta / 1000.0)) * MAX_NODE_SCORE)


#: node states remembered per job shape before the memo starts afresh (memory bound)
MEMO_LIMIT = 200_000


@dataclass
class _Cache:
    version: np.ndarray
    score: np.ndarray
    gpus: list[tuple[int, ...]]
    #: (score, GPUs) by node state: a node's answer depends on nothing else, and a
    #: replay revisits the same few thousand states over and over
    memo: dict[tuple, tuple[float, tuple[int, ...]]] = field(default_factory=dict)


class PaperFGDPolicy(Policy):
    """The artifact's FGD score (see the module docstring)."""

    name = "fgd"

    def __init__(self, config: PolicyConfig | None = None) -> None:
        super().__init__(config)
        self.set_workload(self.config.workload)

    def set_workload(self, jobs: list[Job]) -> None:
        """Replace the target workload (the extender refreshes it from live pods)."""
        self.pods = TargetPods.from_jobs(jobs)
        self._cache: dict[tuple, _Cache] = {}
        self._access: tuple[int, np.ndarray] | None = None
        self._static: tuple[int, list[tuple]] | None = None
        self._frag: tuple[int, np.ndarray, np.ndarray] | None = None

    def score(self, state: ClusterState, job: Job, feasible: np.ndarray) -> np.ndarray:
        return self._scores(state, job).score

    def choose_gpus(self, state: ClusterState, job: Job, node: int) -> tuple[int, ...]:
        return self._scores(state, job).gpus[node]

    # ------------------------------------------------------------------ internals
    def _static_keys(self, state: ClusterState) -> list[tuple]:
        """Per node, what `_compute` reads that never changes: GPU model, GPU count,
        whether the node declares CPU."""
        if self._static is None or self._static[0] != id(state):
            self._static = (id(state), list(zip(state.node_model.tolist(),
                                                state.gpu_counts,
                                                state.cpu_unlimited.tolist(), strict=True)))
        return self._static[1]

    def _node_access(self, state: ClusterState) -> np.ndarray:
        if self._access is None or self._access[0] != id(state):
            by_model = self.pods.access(state.model_names)          # (M, models)
            self._access = (id(state), by_model.T[state.node_model])  # (nodes, M)
        return self._access[1]

    def _before(self, state: ClusterState, nodes: np.ndarray, left: np.ndarray,
                cpu: np.ndarray, acc: np.ndarray) -> np.ndarray:
        """F of `nodes` as they are, cached per node version (shared by every job)."""
        if self._frag is None or self._frag[0] != id(state):
            self._frag = (id(state), np.full(state.n_nodes, -1, dtype=np.int64),
                          np.zeros(state.n_nodes))
        _, version, frag = self._frag
        stale = version[nodes] != state.node_version[nodes]
        if stale.any():
            idx = nodes[stale]
            frag[idx] = self.pods.fragmentation(left[stale], cpu[stale], acc[stale])
            version[idx] = state.node_version[idx]
        return frag[nodes]

    def _scores(self, state: ClusterState, job: Job) -> _Cache:
        # memory changes where a job fits, never its score: jobs differing only in it share
        key = (job.num_gpu, job.gpu_share, job.gpu_mem_mib, job.gpu_models, job.cpu_milli,
               id(state))
        cache = self._cache.get(key)
        if cache is None:
            cache = _Cache(np.full(state.n_nodes, -1, dtype=np.int64),
                           np.full(state.n_nodes, -np.inf), [()] * state.n_nodes)
            self._cache[key] = cache
        stale = np.flatnonzero(cache.version != state.node_version)
        if len(stale):
            self._refresh(state, job, cache, stale)
        return cache

    def _refresh(self, state: ClusterState, job: Job, cache: _Cache, stale: np.ndarray) -> None:
        """Bring `stale` nodes' answers up to date: remembered states from the memo, the
        rest computed (and remembered)."""
        memo = cache.memo
        if len(memo) > MEMO_LIMIT:
            memo.clear()
        # everything `_compute` reads of a node: its request view (`node_key`: free
        # shares with padding, GPU memory, CPU), the guard's closed GPUs, and what never
        # changes (GPU model and count, whether it declares CPU)
        node_key, static = state.node_key, self._static_keys(state)
        idx = stale.tolist()
        if np.count_nonzero(state.blocked):
            blocked = state.blocked[stale]
            keys = [(node_key(n), static[n], blocked[i].tobytes()) for i, n in enumerate(idx)]
        else:
            keys = [(node_key(n), static[n], None) for n in idx]
        missed = [i for i, k in enumerate(keys) if k not in memo]
        if missed:
            score, gpus = self._compute(state, job, stale[missed])
            for j, i in enumerate(missed):
                memo[keys[i]] = (float(score[j]), gpus[j])
        score_row, gpus_row = cache.score, cache.gpus
        for i, n in enumerate(idx):
            score_row[n], gpus_row[n] = memo[keys[i]]
        cache.version[stale] = state.node_version[stale]

    def _compute(self, state: ClusterState, job: Job, nodes: np.ndarray
                 ) -> tuple[np.ndarray, list[tuple[int, ...]]]:
        """(score, GPUs) per node of `nodes`, computed once per distinct node state."""
        free = state.free[nodes]
        left = np.where(free >= 0, np.rint(free * MILLI), -1).astype(np.int64)
        usable = ((free >= job.gpu_share - EPS) & (state.gpu_mem_free[nodes] >= job.gpu_mem_mib)
                  & ~state.blocked[nodes] & state.gpu_valid[nodes])  # gpu_fit's rows
        cpu = np.where(state.cpu_unlimited[nodes], MAX_SPEC_CPU, state.cpu_free[nodes])
        acc = self._node_access(state)[nodes]
        before = self._before(state, nodes, left, cpu, acc)
        if len(nodes) > 64:  # identical nodes (most of a fresh cluster) computed once
            sig = np.concatenate([left, usable, cpu[:, None], state.node_model[nodes, None]],
                                 axis=1)
            _, first, inverse = np.unique(sig, axis=0, return_index=True, return_inverse=True)
            inverse = inverse.reshape(-1)
            left, usable, cpu, acc, before = (left[first], usable[first], cpu[first],
                                              acc[first], before[first])
        else:
            inverse = np.arange(len(nodes))
        after_cpu = cpu - job.cpu_milli
        rows, g = left.shape
        milli = job_milli(job)
        gpus: list[tuple[int, ...]] = [()] * rows
        if job.num_gpu == 0:
            score = sigmoid_score(before - self.pods.fragmentation(left, after_cpu, acc))
        elif is_shared(job):
            cand = np.repeat(left[:, None, :], g, axis=1)                 # (rows, g, g)
            cand[:, np.arange(g), np.arange(g)] -= milli
            after = self.pods.fragmentation(cand.reshape(rows * g, g), np.repeat(after_cpu, g),
                                            np.repeat(acc, g, axis=0)).reshape(rows, g)
            per_gpu = np.where(usable, sigmoid_score(before[:, None] - after), -np.inf)
            best = np.argmax(per_gpu, axis=1)                             # first of the best
            score = per_gpu[np.arange(rows), best]
            gpus = [(int(b),) for b in best]
        else:
            # whole GPUs: only free ones fit, and the tightest are the lowest-index free ones
            take = usable & (np.cumsum(usable, axis=1) <= job.num_gpu)
            enough = take.sum(axis=1) == job.num_gpu
            after_left = np.where(take, left - milli, left)
            score = sigmoid_score(before - self.pods.fragmentation(after_left, after_cpu, acc))
            gpus = [tuple(int(i) for i in np.flatnonzero(take[r])) if enough[r] else ()
                    for r in range(rows)]
        return score[inverse], [gpus[i] for i in inverse]
