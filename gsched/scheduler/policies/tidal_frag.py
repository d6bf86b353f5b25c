"""Fragmentation across time slots: the node score `tidal` ranks by.

FGD (Weng et al., ATC'23) measures, per node, the free GPU that the expected workload
cannot use. Under daily profiles a GPU that is free in the valley but promised at the
peak is not free for a new service that must fit every slot, so the free capacity that
counts is what is left at the GPU's own peak: `cap - max_t load[g, t]` (cap = 1, or
1 - headroom on a GPU guarding forecast inference). Each shape of the target workload
demands its own daily peak per GPU. With flat loads (openb) this is exactly the paper's
FGD measure; with profiles, two services whose peaks interleave leave more room at the
peak, so the measure rewards interleaving for free.

A node's score is lexicographic, highest first:
1. the paper's banded fragmentation score, `int(sigmoid(dF / 1000) * 100)`, dF in
   milli-GPU, so that near-equal moves tie and node order packs them (first fit);
2. the GPU the move strands behind missing CPU: a node's free GPU beyond what its free
   CPU can feed at the workload's CPU-per-GPU ratio (`rho`). FGD sees CPU only through
   each shape's all-or-nothing fit; this term keeps CPU on GPU-dense nodes for the GPU
   pods that need it and sends CPU-only pods where CPU is plentiful;
3. `online.LoadIndex`'s per-GPU tidal score (occupied, interleaving, fuller day).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gsched.models import Job
from gsched.scheduler.policies.fgd_paper import TargetPods, sigmoid_score
from gsched.scheduler.policies.milli import MILLI, cpu_left
from gsched.scheduler.policies.online import GpuFit
from gsched.scheduler.policies.state import ClusterState

#: weights that make the three criteria lexicographic (see the module docstring)
W_STRANDED, W_TIDAL = 1e-5, 1e-7
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


def cpu_per_gpu(jobs: list[Job]) -> float:
    """milli-CPU the workload's GPU jobs ask per milli-GPU (0 when they ask no CPU)."""
    gpu = sum(j.num_gpu * peak_milli(j) for j in jobs if j.num_gpu)
    cpu = sum(j.cpu_milli for j in jobs if j.num_gpu)
    return cpu / gpu if gpu and cpu else 0.0


@dataclass
class _Cache:
    version: np.ndarray  # node version each entry was computed at
    score: np.ndarray
    gpus: list[tuple[int, ...]]
    ok: np.ndarray       # the job's per-GPU fit it was computed from
    tscore: np.ndarray   # and the per-GPU tidal score


class TimeFragmentation:
    """Per-node scores and GPU choices for one state, cached per node version."""

    #: milli-GPU of dF per unit of the sigmoid's argument (the paper's 1000)
    band_scale = 1000.0

    def __init__(self, jobs: list[Job], headroom: float) -> None:
        self.cap = 1.0 - headroom
        self.pods = TargetPods.from_jobs(jobs, demand=peak_milli)
        self.rho = cpu_per_gpu(jobs)
        self._cache: dict[tuple, _Cache] = {}
        self._state_id = -1

    def _bind(self, state: ClusterState) -> None:
        if self._state_id != id(state):
            self._state_id = id(state)
            self._cache.clear()
            self._version = np.full(state.n_nodes, -1, dtype=np.int64)
            self._frag = np.zeros(state.n_nodes)
            self._access = self.pods.access(state.model_names).T[state.node_model]

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

    def _before(self, state: ClusterState, nodes: np.ndarray, left: np.ndarray,
                cpu: np.ndarray) -> np.ndarray:
        stale = self._version[nodes] != state.node_version[nodes]
        if stale.any():
            idx = nodes[stale]
            self._frag[idx] = self.pods.fragmentation(left[stale], cpu[stale],
                                                      self._access[idx])
            self._version[idx] = state.node_version[idx]
        return self._frag[nodes]

    def node_scores(self, state: ClusterState, job: Job, key: tuple, feasible: np.ndarray,
                    fit: GpuFit | None) -> tuple[np.ndarray, list[tuple[int, ...]]]:
        """(score per node, -inf where infeasible; the job's GPUs per node). `fit` is the
        tidal per-GPU fit of the job (None for a CPU-only job); `key` names the job's
        shape and profile. A node is recomputed when its state or the job's fit on it
        changed (the fit moves with the time slot only where load varies over the day)."""
        self._bind(state)
        cache = self._cache.get(key)
        if cache is None:
            if len(self._cache) > 4096:
                self._cache.clear()
            g = state.max_gpus
            cache = self._cache[key] = _Cache(np.full(state.n_nodes, -1, dtype=np.int64),
                                              np.full(state.n_nodes, -np.inf),
                                              [()] * state.n_nodes,
                                              np.zeros((state.n_nodes, g), dtype=bool),
                                              np.zeros((state.n_nodes, g)))
        changed = cache.version != state.node_version
        if fit is not None:
            tscore = np.where(fit.ok, fit.score, 0.0)
            changed |= (fit.ok != cache.ok).any(axis=1) | (tscore != cache.tscore).any(axis=1)
        stale = np.flatnonzero(changed)
        if len(stale):
            score, gpus = self._compute(state, job, stale, fit)
            cache.score[stale] = score
            for i, n in enumerate(stale):
                cache.gpus[n] = gpus[i]
            cache.version[stale] = state.node_version[stale]
            if fit is not None:
                cache.ok[stale] = fit.ok[stale]
                cache.tscore[stale] = tscore[stale]
        return np.where(feasible, cache.score, -np.inf), cache.gpus

    def _compute(self, state: ClusterState, job: Job, nodes: np.ndarray,
                 fit: GpuFit | None) -> tuple[np.ndarray, list[tuple[int, ...]]]:
        left = self.peak_left(state, nodes)
        cpu = cpu_left(state)[nodes]
        acc = self._access[nodes]
        before = self._before(state, nodes, left, cpu)
        after_cpu = cpu - job.cpu_milli
        k, d = job.num_gpu, peak_milli(job)
        rows, g = left.shape
        total = np.clip(left, 0, None).sum(axis=1).astype(np.float64)
        stranded = self.stranded(total - k * d, after_cpu) - self.stranded(total, cpu)
        gpus: list[tuple[int, ...]] = [()] * rows
        tidal = np.zeros(rows)
        if k == 0 or fit is None:
            band = self.band(before - self.pods.fragmentation(left, after_cpu, acc))
        elif k == 1:
            ok, tscore = fit.ok[nodes], np.where(fit.ok[nodes], fit.score[nodes], 0.0)
            cand = np.repeat(left[:, None, :], g, axis=1)
            cand[:, np.arange(g), np.arange(g)] -= d
            np.maximum(cand, np.where(left >= 0, 0, -1)[:, None, :], out=cand)
            after = self.pods.fragmentation(cand.reshape(rows * g, g), np.repeat(after_cpu, g),
                                            np.repeat(acc, g, axis=0)).reshape(rows, g)
            raw = self.band(before[:, None] - after)
            if load_first(job):
                per_gpu = np.where(ok, tscore + W_BAND * raw, -np.inf)
            else:
                per_gpu = np.where(ok, raw + W_TIDAL * tscore, -np.inf)
            best = np.argmax(per_gpu, axis=1)
            band = raw[np.arange(rows), best]
            tidal = tscore[np.arange(rows), best]
            gpus = [(int(b),) for b in best]
        else:
            ok = fit.ok[nodes]
            order = np.argsort(-np.where(ok, fit.score[nodes], -np.inf), axis=1, kind="stable")
            take = np.zeros_like(ok)
            np.put_along_axis(take, order[:, :k], True, axis=1)
            take &= ok
            after_left = np.where(take, np.maximum(left - d, 0), left)
            band = self.band(before - self.pods.fragmentation(after_left, after_cpu, acc))
            tidal = np.where(take, fit.score[nodes], 0.0).sum(axis=1) / k
            gpus = [tuple(int(i) for i in np.flatnonzero(take[r])) for r in range(rows)]
        if load_first(job):  # interleaving first, then fragmentation
            return tidal + W_BAND * (band - W_STRANDED * stranded), gpus
        return band - W_STRANDED * stranded + W_TIDAL * tidal, gpus
