"""The cluster state in the units of the FGD paper's artifact: integer milli-GPU.

The paper's policies (Weng et al., ATC'23; the public `hkust-adsl/kubernetes-scheduler-
simulator`) score nodes in kube-scheduler's integer range 0..100 from integer milli-GPU
and milli-CPU. Integer scores tie often, and which of the tied nodes wins (the first in
node order: `policy.place`) decides much of what they achieve, so the paper's policies
compute in those units too: float shares would break ties the artifact does not break.
"""

from __future__ import annotations

import numpy as np

from gsched.models import Job
from gsched.scheduler.policies.state import ClusterState

MILLI = 1000
#: the artifact's normalisers: the largest node's CPU and GPU (milli)
MAX_SPEC_CPU = 128_000.0
MAX_SPEC_GPU = 8_000.0
MAX_NODE_SCORE = 100


def gpu_left(state: ClusterState) -> np.ndarray:
    """(nodes, gpus) free milli-GPU per GPU as int64; padding GPUs hold -1."""
    return np.where(state.gpu_valid, np.rint(state.free * MILLI), -1).astype(np.int64)


def gpu_left_row(state: ClusterState, n: int) -> np.ndarray:
    """`gpu_left(state)[n]` without converting the whole grid."""
    return np.where(state.gpu_valid[n], np.rint(state.free[n] * MILLI), -1).astype(np.int64)


def node_gpu_left(left: np.ndarray) -> np.ndarray:
    """Free milli-GPU per node (sum over its real GPUs)."""
    return np.clip(left, 0, None).sum(axis=1)


def cpu_left(state: ClusterState) -> np.ndarray:
    """Free milli-CPU per node; a node that declares no CPU counts as the largest node."""
    return np.where(state.cpu_unlimited, MAX_SPEC_CPU, state.cpu_free)


def job_milli(job: Job) -> int:
    """The job's milli-GPU per GPU (0 for a CPU-only job, 1000 for whole GPUs)."""
    if job.num_gpu == 0:
        return 0
    return int(round(job.gpu_share * MILLI))


def is_shared(job: Job) -> bool:
    """One GPU, part of it: the artifact's GPU-share pod."""
    return job.num_gpu == 1 and job_milli(job) < MILLI


def trunc_div(a: np.ndarray | int, b: int) -> np.ndarray:
    """Integer division rounding toward zero, as Go's `/` on int64."""
    a = np.asarray(a, dtype=np.int64)
    return np.sign(a) * (np.abs(a) // b)


def tightest_fit(state: ClusterState, job: Job, node: int, left: np.ndarray | None = None
                 ) -> tuple[int, ...]:
    """The artifact's "best" GPU selection: a shared job takes the fitting GPU with the
    least milli-GPU left (lowest index on ties); whole-GPU jobs take the lowest-index
    free GPUs."""
    if job.num_gpu == 0:
        return ()
    row = gpu_left_row(state, node) if left is None else left[node]
    idx = np.flatnonzero(state.gpu_fit_row(job, job.gpu_share, node))
    if is_shared(job):
        idx = idx[np.argsort(row[idx], kind="stable")]
    return tuple(int(g) for g in idx[: job.num_gpu])
