"""Which of kube-scheduler's proposed victims gsched keeps on a node (the preempt verb).

kube-scheduler proposes victims by priority alone; gsched would rather evict
best-effort training than a service, so it reorders them and keeps the shortest prefix
that makes the pod fit.
"""

from __future__ import annotations

from collections.abc import Mapping

from gsched.models import Job
from gsched.scheduler.extender import pods as podlib
from gsched.scheduler.policies.policy import Policy
from gsched.scheduler.policies.state import ClusterState


def victim_prefix(policy: Policy, state: ClusterState, placed: Mapping[str, podlib.PodJob],
                  job: Job, idx: int, victims: list[str]) -> list[str] | None:
    """Shortest training-first prefix of `victims` that lets `job` fit node `idx`."""
    tracked = [u for u in victims if u in state.running]
    untracked = [u for u in victims if u not in state.running]
    if policy.feasible(state, job)[idx]:
        return victims  # fits by gsched's count already: kube-scheduler knows why not

    def rank(u: str) -> tuple:
        pj = placed.get(u)
        r = state.running[u].job
        cls = (0 if r.kind == "training" and r.preemptible else
               1 if r.kind == "training" and pj is not None and pj.managed else
               2 if pj is None or not pj.managed else 3)
        return (cls, r.priority, u)

    order = sorted(tracked, key=rank)
    released = []
    chosen: list[str] | None = None
    try:
        for u in order:
            released.append(state.release(u))
            if policy.feasible(state, job)[idx]:
                chosen = [r.job.id for r in released]
                break
    finally:
        for r in reversed(released):
            state.allocate(r.job, r.placement, r.load)
    if chosen is None:
        return None
    return chosen + untracked
