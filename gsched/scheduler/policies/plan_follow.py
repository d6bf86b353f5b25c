"""Following the current plan: the CP-SAT plan reaches a policy only as data.

The leader (extender) or the simulator's re-planner puts a target (node, GPUs) per job
on `ClusterState.plan`. A plan-following policy ranks the planned node above every node
its online score could prefer, when that node is feasible now, and takes the planned
GPUs when they still fit; otherwise (a pod the plan has not seen, or a plan the cluster
has moved away from) the online score decides, unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from gsched.models import Job
from gsched.scheduler.policies.state import ClusterState

#: added to the planned node's score: above the online score's whole range
PLAN_BONUS = 10.0


def plan_scores(state: ClusterState, job: Job, scores: np.ndarray) -> np.ndarray:
    """`scores` with the bonus on the job's planned node (a copy; unchanged if none)."""
    target = state.plan.get(job.id) if state.plan else None
    if target is None or not np.isfinite(scores[target[0]]):
        return scores
    out = scores.copy()
    out[target[0]] += PLAN_BONUS
    return out


def planned_gpus(state: ClusterState, job: Job, node: int,
                 gpu_ok: Callable[[int], np.ndarray]) -> tuple[int, ...] | None:
    """The planned GPUs on `node` if the plan names this node and they all fit now
    (`gpu_ok(node)` is the policy's per-GPU fit on it), else None."""
    target = state.plan.get(job.id) if state.plan else None
    if target is None or target[0] != node or len(target[1]) != job.num_gpu:
        return None
    ok = gpu_ok(node)
    if all(0 <= g < len(ok) and ok[g] for g in target[1]):
        return tuple(sorted(target[1]))
    return None
