"""Fragmentation across time slots: the node score `tidal` ranks by.

FGD (Weng et al., ATC'23) measures, per node, the free GPU that the expected workload
cannot use. Under daily profiles a GPU that is free in the valley but promised at the
peak is not free for a new service that must fit every slot, so the free capacity that
counts is what is left at the GPU's own peak: `cap - max_t load[g, t]` (cap = 1, or
1 - headroom on a GPU guarding forecast inference). Each shape of the target workload
demands its own daily peak per GPU. With flat loads (openb) this is the paper's FGD
measure; with profiles, two services whose peaks interleave leave more room at the
peak, so the measure rewards interleaving for free. To it the measure adds, at weight
`W_WASTE`, each GPU's *expected waste* (`waste_table`): the gap the GPU would strand if
the workload's shares kept filling it, FGD's one-pod-ahead view looked further ahead.

A node's score is lexicographic, highest first:
1. the banded score of that fragmentation, `int(sigmoid(dF / 1000) * 100)`, dF in
   milli-GPU, so that near-equal moves tie and node order packs them (first fit);
2. the GPU the move strands behind missing CPU: a node's free GPU beyond what its free
   CPU can feed at the workload's CPU-per-GPU ratio (`rho`). FGD sees CPU only through
   each shape's all-or-nothing fit; this term keeps CPU on GPU-dense nodes for the GPU
   pods that need it and sends CPU-only pods where CPU is plentiful;
3. for a shared GPU (one GPU, part of it), the sum-of-squares gap balance
   (`gap_balance`): fill the gaps the cluster has many of, create few of any one size;
4. `online.LoadIndex`'s per-GPU tidal score (occupied, interleaving, fuller day).
Terms 1-2 are cached per request shape and node version; term 3 moves with every
placement anywhere, so it is combined with them on each call (one pass over the GPUs).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gsched.models import Job
from gsched.scheduler.policies.fgd_paper import TargetPods, sigmoid_score
from gsched.scheduler.policies.milli import MILLI, cpu_left
from gsched.scheduler.policies.online import GpuFit, row_count, top_k
from gsched.scheduler.policies.state import ClusterState

#: weights that make the criteria lexicographic (see the module docstring)
W_STRANDED, W_TIDAL = 1e-5, 1e-7
#: a shared job's gap-balance term (0..1) and, below it, the tidal score (0..~2)
W_GAPS, W_TIDAL_SHARED = 1e-8, 1e-11
#: milli-GPU per gap level (the gap-balance term and the waste table)
GAP_LEVEL = 10
#: weight of the expected waste of each GPU's gap in the fragmentation measure
W_WASTE = 0.5
#: a `load_first` job ranks by the tidal score first; the band (0..100) then breaks ties
W_BAND = 1e-4


def peak_milli(job: Job) -> int:
    """Per-GPU demand of a job at its own daily peak, in milli-GPU (0 for CPU-only)."""
    if job.num_gpu == 0:
        return 0
    return int(round(min(job.peak_load, 1.0) * MILLI))


def load_first(job: Job) -> bool:
    """A job whose load is not its request (a daily profile, or a utilisation below 1)
    ranks by how its load fits the GPU's day first; a job booked at its request ranks by
    fragmentation first."""
    return job.profile is not None or job.utilization < 1.0


def waste_table(milli: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Expected milli-GPU a GPU's gap ends up stranding, per gap level (0..1000 by
    `GAP_LEVEL`), if shares of the workload keep landing on it until none fits.

    FGD counts a gap as stranded for each share larger than it, one share ahead. Looked
    further: a gap h takes a next share m among those that fit (m <= h, in proportion to
    their popularity) and its gap h - m goes on; when none fits, h is stranded. So
    `W(h) = h` if no share fits, else `W(h) = sum_{m <= h} P(m | fits) W(h - m)`;
    `milli`/`weight` are the workload's per-GPU shares and popularity. A 530 gap that
    a 470 share fills to 60 strands little; a 210 gap that only rare small shares fit
    strands most of itself, so moves that leave the workload gaps it can fill rank
    above moves that leave dead ones."""
    top = MILLI // GAP_LEVEL
    table = np.arange(top + 1) * float(GAP_LEVEL)
    keep = (milli > 0) & (weight > 0)
    if not keep.any():  # no share fits this GPU model: every gap is stranded
        return table
    level = np.ceil(milli[keep] / GAP_LEVEL).astype(np.int64)
    w = weight[keep]
    for h in range(1, top + 1):
        fits = level <= h
        if fits.any():
            table[h] = w[fits] @ table[h - level[fits]] / w[fits].sum()
    return table


def cpu_per_gpu(jobs: list[Job]) -> float:
    """milli-CPU the workload's GPU jobs ask per milli-GPU (0 when they ask no CPU)."""
    gpu = sum(j.num_gpu * peak_milli(j) for j in jobs if j.num_gpu)
    cpu = sum(j.cpu_milli for j in jobs if j.num_gpu)
    return cpu / gpu if gpu and cpu else 0.0


@dataclass
class _Terms:
    """The fragmentation terms of one request shape (GPU count, per-GPU peak demand,
    CPU), per node version: what a job of that shape does to each node's fragmentation,
    whatever its daily profile (the profile only decides which GPUs fit and their tidal
    score, `online.GpuFit`)."""

    version: np.ndarray    # (nodes,) node version each row was computed at
    stranded: np.ndarray   # (nodes,) GPU stranded behind missing CPU, after minus before
    band: np.ndarray       # (nodes, gpus) banded dF per GPU taken (one GPU); else (nodes,)
    take: np.ndarray | None = None  # several GPUs: the GPUs `band` was computed for


class GpuChoice:
    """The job's GPUs on each node, built on demand (a driver asks for one node)."""

    def __init__(self, k: int, best: np.ndarray | None = None,
                 take: np.ndarray | None = None) -> None:
        self.k, self.best, self.take = k, best, take

    def __getitem__(self, node: int) -> tuple[int, ...]:
        if self.k == 0:
            return ()
        if self.best is not None:
            return (int(self.best[node]),)
        assert self.take is not None
        return tuple(int(i) for i in np.flatnonzero(self.take[node]))


class TimeFragmentation:
    """Per-node scores and GPU choices for one state. The profile-independent part (the
    fragmentation terms) is cached per request shape and node version; the job's own
    per-GPU fit is combined with it in a few vector operations per decision."""

    #: milli-GPU of dF per unit of the sigmoid's argument (the paper's 1000)
    band_scale = 1000.0
    #: at most this many cached (nodes x GPUs) cells of terms, over every shape
    max_cells = 16_000_000  # about 130 MB of float64

    def __init__(self, jobs: list[Job], headroom: float) -> None:
        self.cap = 1.0 - headroom
        self.pods = TargetPods.from_jobs(jobs, demand=peak_milli)
        self.rho = cpu_per_gpu(jobs)
        self._terms: dict[tuple, _Terms] = {}
        self._state_id = -1

    def _bind(self, state: ClusterState) -> None:
        if self._state_id != id(state):
            self._state_id = id(state)
            self._terms.clear()
            self._version = np.full(state.n_nodes, -1, dtype=np.int64)
            self._frag = np.zeros(state.n_nodes)
            self._left = np.zeros((state.n_nodes, state.max_gpus), dtype=np.int64)
            self._access = self.pods.access(state.model_names).T[state.node_model]
            # one waste table per set of shapes a node's GPU model admits
            rows, self._waste_row = np.unique(self._access, axis=0, return_inverse=True)
            self._waste_row = self._waste_row.reshape(-1)
            self._waste = np.stack([waste_table(self.pods.milli, self.pods.weight * r)
                                    for r in rows])

    def peak_left(self, state: ClusterState, nodes: np.ndarray) -> np.ndarray:
        """(rows, gpus) milli-GPU left at each GPU's daily peak; padding GPUs hold -1."""
        cap = np.where(state.forecast_on_gpu[nodes] > 0, self.cap, 1.0)
        left = np.clip(np.rint((cap - state.load[nodes].max(axis=2)) * MILLI), 0, None)
        return np.where(state.gpu_valid[nodes], left, -1).astype(np.int64)

    def stranded(self, left: np.ndarray, cpu: np.ndarray) -> np.ndarray:
        """Free milli-GPU per row beyond what the row's free CPU can feed."""
        if self.rho <= 0:
            return np.zeros(len(left))
        return np.maximum(left - np.maximum(cpu, 0.0) / self.rho, 0.0)

    def band(self, delta: np.ndarray) -> np.ndarray:
        """The banded fragmentation score of a dF (milli-GPU)."""
        return sigmoid_score(delta * (1000.0 / self.band_scale))

    def gap_balance(self, state: ClusterState, d: int) -> np.ndarray:
        """(nodes, gpus) change in the sum of squared gap counts if a `d`-milli share
        went to each GPU, over the largest possible change (so within -1..1).

        The sum-of-squares rule of online bin packing (Csirik et al., "On the
        sum-of-squares algorithm for bin packing", J. ACM 2006): N(h) counts the GPUs
        with h milli-GPU left at their peak (0 < h < 1000); a move from gap h to h - d
        changes sum N^2 by (1 - 2 N(h)) + (1 + 2 N(h - d)) (each term only for a partial
        gap). Lower is better: it fills the common gaps and avoids creating more of
        them, so shared jobs' leftovers pair up instead of piling up at one size."""
        stale = np.flatnonzero(self._version != state.node_version)
        if len(stale):
            self._node_state(state, stale)
        left = self._left
        top = MILLI // GAP_LEVEL
        count = np.bincount(left[left >= 0] // GAP_LEVEL, minlength=top + 1).astype(np.float64)
        count[0] = count[top:] = 0.0
        # per milli-GPU gap h: the change from a GPU leaving gap h and from one arriving at it
        h = np.arange(MILLI + 1)
        partial = (h > 0) & (h < MILLI)
        leave = np.where(partial, 1.0 - 2.0 * count[h // GAP_LEVEL], 0.0)
        arrive = np.where(h > 0, 1.0 + 2.0 * count[h // GAP_LEVEL], 0.0)
        delta = leave[np.clip(left, 0, MILLI)] + arrive[np.clip(left - d, 0, MILLI)]
        return delta / (4.0 * state.total_gpus + 2.0)

    def fragmentation(self, left: np.ndarray, cpu: np.ndarray, nodes: np.ndarray
                      ) -> np.ndarray:
        """FGD's F per row plus `W_WASTE` times the expected waste of each GPU's gap
        (`waste_table`); `nodes` names each row's node (rows may repeat a node)."""
        f = self.pods.fragmentation(left, cpu, self._access[nodes])
        table = self._waste[self._waste_row[nodes]]
        level = np.clip(left, 0, None) // GAP_LEVEL
        waste = np.where(left >= 0, np.take_along_axis(table, level, axis=1), 0.0)
        return f + W_WASTE * waste.sum(axis=1)

    def _node_state(self, state: ClusterState, nodes: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(peak left, free CPU, F before) of `nodes`, the first and last cached per node
        version (shared by every shape)."""
        cpu = cpu_left(state)[nodes]
        stale = self._version[nodes] != state.node_version[nodes]
        if stale.any():
            idx = nodes[stale]
            left = self.peak_left(state, idx)
            self._left[idx] = left
            self._frag[idx] = self.fragmentation(left, cpu[stale], idx)
            self._version[idx] = state.node_version[idx]
        return self._left[nodes], cpu, self._frag[nodes]

    def node_scores(self, state: ClusterState, job: Job, feasible: np.ndarray,
                    fit: GpuFit | None) -> tuple[np.ndarray, GpuChoice]:
        """(score per node, -inf where infeasible; the job's GPUs per node). `fit` is the
        tidal per-GPU fit of the job (None for a CPU-only job). The fragmentation terms
        of the job's shape are recomputed only for nodes whose state changed (and, for a
        several-GPU job, whose chosen GPUs changed); the fit is combined with them
        afresh, as it moves with the job's profile and the time slot."""
        self._bind(state)
        k = job.num_gpu if fit is not None else 0
        d = peak_milli(job)
        terms = self._shape_terms(state, job, k, d)
        stale = terms.version != state.node_version
        take = None
        if k > 1:
            assert fit is not None and terms.take is not None
            take = top_k(fit.score, fit.ok, k)
            stale |= row_count(take != terms.take) > 0
        rows = np.flatnonzero(stale)
        if len(rows):
            terms.band[rows], terms.stranded[rows] = self._compute(
                state, job, k, rows, None if take is None else take[rows])
            terms.version[rows] = state.node_version[rows]
            if take is not None:
                terms.take[rows] = take[rows]
        gaps = (self.gap_balance(state, d) if k == 1 and d < MILLI and not load_first(job)
                else None)
        score, best = self._combine(job, k, terms, fit, take, gaps)
        return np.where(feasible, score, -np.inf), GpuChoice(k, best, take)

    def _shape_terms(self, state: ClusterState, job: Job, k: int, d: int) -> _Terms:
        key = (k, d, job.cpu_milli)
        terms = self._terms.get(key)
        if terms is None:
            n, g = state.n_nodes, state.max_gpus
            if (len(self._terms) + 1) * n * g > self.max_cells:
                self._terms.clear()
            terms = self._terms[key] = _Terms(
                np.full(n, -1, dtype=np.int64), np.zeros(n),
                np.zeros((n, g)) if k == 1 else np.zeros(n),
                np.zeros((n, g), dtype=bool) if k > 1 else None)
        return terms

    # -- the score: fragmentation terms (per shape) and how they rank with the fit ------
    def _compute(self, state: ClusterState, job: Job, k: int, nodes: np.ndarray,
                 take: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """(band, stranded) of `nodes` for the job's shape: the band per GPU for a
        one-GPU job, for the GPUs in `take` for a several-GPU job, of the CPU alone for
        a CPU-only job."""
        left, cpu, before = self._node_state(state, nodes)
        after_cpu = cpu - job.cpu_milli
        d = peak_milli(job)
        rows, g = left.shape
        total = np.clip(left, 0, None).sum(axis=1).astype(np.float64)
        stranded = self.stranded(total - k * d, after_cpu) - self.stranded(total, cpu)
        if k == 0:
            band = self.band(before - self.fragmentation(left, after_cpu, nodes))
        elif k == 1:
            cand = np.repeat(left[:, None, :], g, axis=1)
            cand[:, np.arange(g), np.arange(g)] -= d
            np.maximum(cand, np.where(left >= 0, 0, -1)[:, None, :], out=cand)
            after = self.fragmentation(cand.reshape(rows * g, g), np.repeat(after_cpu, g),
                                       np.repeat(nodes, g)).reshape(rows, g)
            band = self.band(before[:, None] - after)
        else:
            assert take is not None
            after_left = np.where(take, np.maximum(left - d, 0), left)
            band = self.band(before - self.fragmentation(after_left, after_cpu, nodes))
        return band, stranded

    @staticmethod
    def _combine(job: Job, k: int, terms: _Terms, fit: GpuFit | None,
                 take: np.ndarray | None, gaps: np.ndarray | None
                 ) -> tuple[np.ndarray, np.ndarray | None]:
        """(score per node, best GPU per node for a one-GPU job): the band, the stranded
        GPU, the gap balance (`gaps`, a shared job's) and the tidal score, lexicographic
        (the module docstring)."""
        best = None
        if gaps is not None:  # a share booked at its request: ranked per GPU
            assert fit is not None
            per_gpu = (terms.band - W_STRANDED * terms.stranded[:, None]
                       + W_TIDAL_SHARED * fit.score) - W_GAPS * gaps
            best = np.argmax(per_gpu, axis=1)
            at = np.arange(0, per_gpu.size, per_gpu.shape[1]) + best
            return per_gpu.reshape(-1)[at], best
        if k == 0 or fit is None:
            band, tidal = terms.band, np.zeros(len(terms.band))
        elif k == 1:
            # the fit's score is -inf exactly where the GPU does not fit, so these are
            # the per-GPU ranks with -inf there, and the tidal score counts 0 there
            # (`score + W_BAND * band` for a load-first job, else `band + W_TIDAL *
            # score`, its first highest GPU: one compiled pass, `online_kernels`)
            from gsched.scheduler.policies.online_kernels import best_gpu

            lf = load_first(job)
            best, band, tidal = best_gpu(terms.band, fit.score, fit.ok, lf,
                                         W_BAND if lf else W_TIDAL)
        else:
            band = terms.band
            tidal = np.where(take, fit.score, 0.0).sum(axis=1) / k
        stranded = terms.stranded
        if load_first(job):  # interleaving first, then fragmentation
            return tidal + W_BAND * (band - W_STRANDED * stranded), best
        return band - W_STRANDED * stranded + W_TIDAL * tidal, best
