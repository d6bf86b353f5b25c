"""Priority preemption: which running jobs to evict so a more important job fits.

Shared by the simulator and the extender. Only preemptible jobs of strictly lower
priority are victims, lowest priority and most recently started first (least work lost).
A node is chosen by the fewest victims, then the least GPU share evicted.

For request-based policies the answer is exact and cheap: a node is a candidate only if
the job would fit with *every* preemptible job gone (one vector test over the cluster),
and each candidate's victims are found on a copy of that node's row, never touching the
state. Policies that place by something else (daily profiles) are asked through their
own `feasible`, evicting and restoring in the state, over fewer candidate nodes.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from gsched.models import Job
from gsched.scheduler.policies.policy import Policy
from gsched.scheduler.policies.state import EPS, ClusterState

MAX_CANDIDATE_NODES = 64
MAX_GENERIC_CANDIDATES = 16


def victim_order(job: Job, started: float) -> tuple:
    """Evict lowest priority first, then the most recently started (least work lost)."""
    return (job.priority, -started)


def _uses_request_view(policy: Policy) -> bool:
    return (type(policy).feasible is Policy.feasible
            and type(policy).filter is Policy.filter)


def find_victims(policy: Policy, state: ClusterState, job: Job,
                 started: Callable[[str], float],
                 orders: dict[int, tuple] | None = None) -> tuple[int, list[str]] | None:
    """The node and victims (in eviction order) that make `job` fit, or None.

    The state is left as it was: this only decides, the caller evicts. A driver whose
    `started` times change only when a job starts (and so bumps its node's version) may
    pass a dict in `orders`, kept between calls: each node's victim order is then
    computed once per node version and priority, not on every call.
    """
    if not job.num_gpu:
        return None
    request_view = _uses_request_view(policy)
    reserve = policy.reservation(job)
    candidates = state.static_mask(job) & (state.preemptible_reserved > EPS).any(axis=1)
    if request_view:
        room = (state.free + state.preemptible_reserved >= reserve - EPS) & state.gpu_valid
        candidates &= room.sum(axis=1) >= job.num_gpu
    nodes = np.flatnonzero(candidates)
    if not len(nodes):
        return None
    # Most evictable share first: likeliest to need the fewest victims.
    evictable = state.preemptible_reserved[nodes].sum(axis=1)
    nodes = nodes[np.argsort(-evictable, kind="stable")]
    limit = MAX_CANDIDATE_NODES if request_view else MAX_GENERIC_CANDIDATES
    best: tuple[tuple, int, list[str]] | None = None
    running = state.running
    nodes = nodes[:limit]
    for n, version in zip(nodes.tolist(), state.node_version[nodes].tolist(), strict=True):
        cached = orders.get(n) if orders is not None else None
        if cached is not None and cached[0] == version and cached[1] == job.priority:
            keyed, first_lost = cached[2], cached[3]
        else:
            keyed = sorted((victim_order(running[j].job, started(j)), i, j)
                           for i, j in enumerate(state.node_jobs[n])
                           if running[j].job.preemptible
                           and running[j].job.priority < job.priority)
            first_lost = running[keyed[0][2]].job.gpu_request if keyed else 0.0
            if orders is not None:
                orders[n] = (version, job.priority, keyed, first_lost)
        if not keyed:
            continue
        if best is not None and best[0][0] == 1:
            # Only one victim can still win: the node's first, if it loses less than the
            # best so far (or as much, on a lower node). No need to try the rest.
            if (first_lost, n) >= best[0][1:]:
                continue
            order = [keyed[0][2]]
        else:
            order = [j for _, _, j in keyed]
        chosen = (_victims_on_row(state, job, reserve, n, order) if request_view
                  else _victims_by_policy(policy, state, job, n, order))
        if chosen is not None:
            lost = sum(state.running[j].job.gpu_request for j in chosen)
            key = (len(chosen), lost, n)
            if best is None or key < best[0]:
                best = (key, n, chosen)
    return None if best is None else (best[1], best[2])


def _victims_on_row(state: ClusterState, job: Job, reserve: float, n: int,
                    order: list[str]) -> list[str] | None:
    """Evict in `order` on a copy of node n's row until the job fits (request view).

    The row is a few GPUs: plain Python floats, the same additions numpy would make."""
    free = state.free[n].tolist()
    gmem = state.gpu_mem_free[n].tolist()
    cpu, mem = state.cpu_free.item(n), state.mem_free.item(n)
    cpu_ok = state.cpu_unlimited.item(n)
    mem_ok = state.mem_unlimited.item(n)
    real = range(state.gpu_counts[n])  # the node's GPUs (padding ones never fit)
    floor, need = reserve - EPS, job.gpu_mem_mib
    chosen: list[str] = []
    for jid in order:
        r = state.running[jid]
        share, gpu_mem = r.placement.reserved, r.job.gpu_mem_mib
        for g in r.placement.gpus:
            free[g] += share
            gmem[g] += gpu_mem
        cpu += r.job.cpu_milli
        mem += r.job.memory_mib
        chosen.append(jid)
        fits = sum(1 for g in real if free[g] >= floor and gmem[g] >= need)
        if (fits >= job.num_gpu and (cpu_ok or cpu >= job.cpu_milli - EPS)
                and (mem_ok or mem >= job.memory_mib - EPS)):
            return chosen
    return None


def _victims_by_policy(policy: Policy, state: ClusterState, job: Job, n: int,
                       order: list[str]) -> list[str] | None:
    """Evict in `order` in the state, asking the policy, then restore everything."""
    released = []
    chosen: list[str] | None = None
    for jid in order:
        released.append(state.release(jid))
        if policy.feasible(state, job)[n]:
            chosen = [r.job.id for r in released]
            break
    for r in reversed(released):
        state.allocate(r.job, r.placement, r.load)
    return chosen
