"""Priority preemption: which running jobs to evict so a more important job fits.

Shared by the simulator and the extender. Only preemptible jobs of strictly lower
priority are victims; best-effort training goes before anything else. A node is chosen
by the fewest victims, then the least GPU share evicted.
"""

from __future__ import annotations

from collections.abc import Callable

from gsched.models import Job
from gsched.scheduler.policy import Policy
from gsched.scheduler.state import ClusterState

MAX_CANDIDATE_NODES = 64


def victim_order(job: Job, started: float) -> tuple:
    """Evict lowest priority first, then the most recently started (least work lost)."""
    return (job.priority, -started)


def find_victims(policy: Policy, state: ClusterState, job: Job,
                 started: Callable[[str], float]) -> tuple[int, list[str]] | None:
    """The node and victims (in eviction order) that make `job` fit, or None.

    The state is restored before returning: this only decides, the caller evicts.
    """
    eligible: dict[int, list[str]] = {}
    for jid, r in state.running.items():
        if r.job.preemptible and r.job.priority < job.priority:
            eligible.setdefault(r.placement.node, []).append(jid)
    if not eligible:
        return None
    static = state.static_mask(job)
    nodes = [n for n in eligible if static[n]]
    share = {n: sum(state.running[j].job.gpu_request for j in eligible[n]) for n in nodes}
    nodes.sort(key=lambda n: (-share[n], n))
    best: tuple[tuple, int, list[str]] | None = None
    for n in nodes[:MAX_CANDIDATE_NODES]:
        order = sorted(eligible[n], key=lambda j: victim_order(state.running[j].job, started(j)))
        released = []
        chosen: list[str] | None = None
        for jid in order:
            released.append(state.release(jid))
            if policy.feasible(state, job)[n]:
                chosen = [r.job.id for r in released]
                break
        for r in reversed(released):
            state.allocate(r.job, r.placement, r.load)
        if chosen is not None:
            lost = sum(state.running[j].job.gpu_request for j in chosen)
            key = (len(chosen), lost, n)
            if best is None or key < best[0]:
                best = (key, n, chosen)
    if best is None:
        return None
    return best[1], best[2]

