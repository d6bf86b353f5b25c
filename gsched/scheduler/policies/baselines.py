"""The baseline policies gsched is measured against (the FGD paper's six: `paper.py`).

- `k8s-spread`: kube-scheduler's default NodeResourcesFit LeastAllocated scoring.
- `binpack`: NodeResourcesFit MostAllocated, the usual "pack GPUs" setting.
- `peak`: peak-reservation first-fit-decreasing: books each job's *peak* daily load
  (a right-sized request), first node that fits, waiting jobs retried largest first.
"""

from __future__ import annotations

import numpy as np

from gsched.models import Job
from gsched.scheduler.policies.policy import (
    Policy,
    loosest_gpus,
    mean_fraction,
    resource_fractions,
)
from gsched.scheduler.policies.state import ClusterState


class K8sSpreadPolicy(Policy):
    """LeastAllocated: prefer the node with the most free resources (mean over resources)."""

    name = "k8s-spread"

    def score(self, state: ClusterState, job: Job, feasible: np.ndarray) -> np.ndarray:
        return 1.0 - mean_fraction(resource_fractions(state, job, self.reservation(job)))

    def choose_gpus(self, state: ClusterState, job: Job, node: int) -> tuple[int, ...]:
        return loosest_gpus(state, job, node, self.reservation(job))


class BinpackPolicy(Policy):
    """MostAllocated: prefer the node with the most requested resources (mean)."""

    name = "binpack"

    def score(self, state: ClusterState, job: Job, feasible: np.ndarray) -> np.ndarray:
        return mean_fraction(resource_fractions(state, job, self.reservation(job)))


class PeakFFDPolicy(Policy):
    """Peak reservation, first-fit decreasing."""

    name = "peak"

    def reservation(self, job: Job) -> float:
        return job.peak_load if job.num_gpu == 1 else job.gpu_share

    def score(self, state: ClusterState, job: Job, feasible: np.ndarray) -> np.ndarray:
        return -np.arange(state.n_nodes, dtype=np.float64)

    def choose_gpus(self, state: ClusterState, job: Job, node: int) -> tuple[int, ...]:
        if job.num_gpu == 0:
            return ()
        return tuple(state.fitting_gpus(job, self.reservation(job), node)[: job.num_gpu])

    def queue_key(self, job: Job) -> tuple:
        return (-job.priority, -job.num_gpu * self.reservation(job), job.submit_time, job.id)
