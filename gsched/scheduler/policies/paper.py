"""The FGD paper's baselines, as its artifact defines them.

Weng et al. (USENIX ATC'23) compare FGD with five heuristics, each a kube-scheduler score
plugin in the public `hkust-adsl/kubernetes-scheduler-simulator`. Every score here is
the artifact's integer in 0..100; `policy.place` takes the first best node in node
order, as the artifact's scheduler takes the smallest node name (inflation mode gives
each seed its own random node order, as the artifact's random name prefixes do).
docs/policies.md has each definition and what gsched adds or changes.

- `random`: one feasible node chosen uniformly; a shared pod gets a random fitting GPU.
- `dotprod` (Tetris): the smallest dot product of the node's free (CPU, GPU) and the
  pod's request, each normalised by the largest node.
- `clustering`: GPU pods go to nodes that already hold pods of the same GPU shape
  (shared, 1-GPU, 2-GPU, ...), then to empty nodes, then anywhere; fuller nodes first.
- `gpupacking`: a partly used GPU, then a free GPU on a node in use, then an empty node.
- `bestfit`: the least CPU and GPU left after placement (weights 1/2, 1/2), min-max
  normalised.
"""

from __future__ import annotations

import numpy as np

from gsched.models import Job
from gsched.scheduler.policies.milli import (
    MAX_NODE_SCORE,
    MAX_SPEC_CPU,
    MAX_SPEC_GPU,
    MILLI,
    cpu_left,
    gpu_left,
    is_shared,
    job_milli,
    node_gpu_left,
    tightest_fit,
    trunc_div,
)
from gsched.scheduler.policies.policy import Policy, PolicyConfig
from gsched.scheduler.policies.state import ClusterState


class PaperPolicy(Policy):
    """Base of the paper's policies: the artifact's "best" GPU selection."""

    def choose_gpus(self, state: ClusterState, job: Job, node: int) -> tuple[int, ...]:
        return tightest_fit(state, job, node)


class RandomPolicy(PaperPolicy):
    """A feasible node uniformly at random (the artifact's RandomScore)."""

    name = "random"

    def score(self, state: ClusterState, job: Job, feasible: np.ndarray) -> np.ndarray:
        out = np.zeros(state.n_nodes)
        idx = np.flatnonzero(feasible)
        if len(idx):
            out[idx[self.rng.integers(len(idx))]] = MAX_NODE_SCORE
        return out

    def choose_gpus(self, state: ClusterState, job: Job, node: int) -> tuple[int, ...]:
        if not is_shared(job):
            return tightest_fit(state, job, node)
        ok = np.flatnonzero(state.gpu_fit_row(job, job.gpu_share, node))
        return (int(ok[self.rng.integers(len(ok))]),)


class DotProductPolicy(PaperPolicy):
    """Tetris's alignment score on (CPU, GPU), merged GPU dimension, max normalisation."""

    name = "dotprod"

    def score(self, state: ClusterState, job: Job, feasible: np.ndarray) -> np.ndarray:
        node = (cpu_left(state) / MAX_SPEC_CPU, node_gpu_left(gpu_left(state)) / MAX_SPEC_GPU)
        pod = (job.cpu_milli / MAX_SPEC_CPU, job_milli(job) * job.num_gpu / MAX_SPEC_GPU)
        dot = 0.0 + node[0] * pod[0] + node[1] * pod[1]
        return np.trunc(MAX_NODE_SCORE * (1.0 - dot / 2.0))


class GpuClusteringPolicy(PaperPolicy):
    """Pods of one GPU shape together: same-shape-only nodes > mixed nodes holding the
    shape > nodes without GPU pods > the rest; within a tier, fuller nodes first.
    CPU-only pods score the minimum everywhere (node order decides)."""

    name = "clustering"

    def __init__(self, config: PolicyConfig | None = None) -> None:
        super().__init__(config)
        self._state_id = -1

    @staticmethod
    def shape(job: Job) -> str:
        return "share" if is_shared(job) else f"{job.num_gpu}-gpu"

    def _refresh(self, state: ClusterState) -> None:
        """Per shape, how many GPU pods of it each node holds (refreshed per node version)."""
        if self._state_id != id(state):
            self._state_id = id(state)
            self._version = np.full(state.n_nodes, -1, dtype=np.int64)
            self._counts: dict[str, np.ndarray] = {}
            self._distinct = np.zeros(state.n_nodes, dtype=np.int64)
        for n in np.flatnonzero(self._version != state.node_version):
            for arr in self._counts.values():
                arr[n] = 0
            for jid in state.node_jobs[n]:
                j = state.running[jid].job
                if j.num_gpu:
                    arr = self._counts.setdefault(self.shape(j),
                                                  np.zeros(state.n_nodes, dtype=np.int64))
                    arr[n] += 1
            self._distinct[n] = sum(int(arr[n] > 0) for arr in self._counts.values())
            self._version[n] = state.node_version[n]

    def score(self, state: ClusterState, job: Job, feasible: np.ndarray) -> np.ndarray:
        if job.num_gpu == 0:
            return np.zeros(state.n_nodes)
        self._refresh(state)
        mine = self._counts.get(self.shape(job))
        has = mine > 0 if mine is not None else np.zeros(state.n_nodes, dtype=bool)
        quarter = MAX_NODE_SCORE // 4
        fill = trunc_div(quarter * (int(MAX_SPEC_GPU) - node_gpu_left(gpu_left(state))),
                         int(MAX_SPEC_GPU))
        tier = np.where(has, np.where(self._distinct == 1, 3, 2),
                        np.where(self._distinct == 0, 1, 0))
        return (fill + quarter * tier).astype(np.float64)


class GpuPackingPolicy(PaperPolicy):
    """Three tiers: share a partly used GPU (the fuller the better) > take free GPUs of
    a node in use (the fewer the better) > open an empty node (the smaller the better).
    CPU-only pods score the minimum everywhere (node order decides)."""

    name = "gpupacking"

    def score(self, state: ClusterState, job: Job, feasible: np.ndarray) -> np.ndarray:
        if job.num_gpu == 0:
            return np.zeros(state.n_nodes)
        left = gpu_left(state)
        full = (left == MILLI).sum(axis=1)
        empty_node = full == state.gpu_count
        open_node = np.maximum(MAX_NODE_SCORE // 3 - full, full)
        if is_shared(job):
            fits = left >= job_milli(job)
            tight = np.where(fits, left, MILLI + 1).min(axis=1)
            in_use = np.where(
                tight >= MILLI,
                max(MAX_NODE_SCORE // 2 - 1, MAX_NODE_SCORE // 3),
                np.maximum(MAX_NODE_SCORE - trunc_div(tight * 100 // MILLI, 10),
                           MAX_NODE_SCORE // 2))
        else:
            in_use = np.full(state.n_nodes, max(MAX_NODE_SCORE // 2 - job.num_gpu,
                                                MAX_NODE_SCORE // 3))
        return np.where(empty_node, open_node, in_use).astype(np.float64)


class PaperBestFitPolicy(PaperPolicy):
    """Least CPU and GPU left after placement, each over the largest node, weighted 1/2
    and 1/2, for every pod (CPU-only included); then min-max normalised to 0..100."""

    name = "bestfit"

    def score(self, state: ClusterState, job: Job, feasible: np.ndarray) -> np.ndarray:
        cpu_term = (cpu_left(state) - job.cpu_milli) / MAX_SPEC_CPU * 0.5
        gpu_term = (node_gpu_left(gpu_left(state)) - job_milli(job) * job.num_gpu) \
            / MAX_SPEC_GPU * 0.5
        raw = np.trunc((1.0 - (0.0 + cpu_term + gpu_term)) * MAX_NODE_SCORE).astype(np.int64)
        return normalize_min_max(raw, feasible).astype(np.float64)


def normalize_min_max(raw: np.ndarray, feasible: np.ndarray) -> np.ndarray:
    """The artifact's integer min-max normalisation over the scored (feasible) nodes:
    `(s - lo) * 100 / (hi - lo)`, integer division; all 0 when every score is equal."""
    out = np.zeros(len(raw), dtype=np.int64)
    if not feasible.any():
        return out
    lo, hi = int(raw[feasible].min()), int(raw[feasible].max())
    if hi == lo:
        return out
    out[feasible] = trunc_div((raw[feasible] - lo) * MAX_NODE_SCORE, hi - lo)
    return out
