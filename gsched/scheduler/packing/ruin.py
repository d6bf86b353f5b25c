"""Ruin-and-recreate in numpy: thousands of cheap steps before the CP-SAT search.

Free the workloads of a few GPUs, re-insert them by "valley" best fit, keep the step
when it uses fewer GPUs or concentrates load.
"""

from __future__ import annotations

import numpy as np

from gsched.scheduler.packing.greedy import Packing, gpu_order
from gsched.scheduler.packing.lns import Budget
from gsched.scheduler.packing.problem import PackProblem

RR_STEP_DTIME = 1e-4
RR_ELEM_DTIME = 7e-10
#: above this many GPUs in use, a random sample of them receives in a step (cheaper
#: steps beat a fleet-wide best fit at 10,000 workloads)
RR_RECEIVERS = 600
#: weight of the memory left (as a share of the GPU's) in the valley best fit
MEM_WEIGHT = 1.0


def ruin_recreate(prob: PackProblem, pk: Packing, budget: Budget, rng: np.random.Generator,
                  reserve: float = 0.0, max_iterations: int | None = None,
                  k_range: tuple[int, int] = (2, 8), noise: float = 0.1,
                  walk: float = 0.2, target: int = 0) -> int:
    """Numpy ruin-and-recreate: many cheap steps where CP-SAT affords few big ones.

    A step frees every movable single-GPU workload on a few GPUs (one lightly filled,
    drawn with a bias towards the lightest, plus random others), re-inserts them
    largest first (summed squared load, jittered by `noise`) into the GPUs in use, each
    where its tightest slot stays tightest ("valley" best fit: the GPU whose smallest
    residual after it is smallest), re-opening a freed GPU only when nothing fits. The
    step is kept when it uses fewer GPUs, or as many with the load at least as
    concentrated (higher sum of squared daily fill over the GPUs it touched: that
    leaves some GPU nearly empty for a later step to clear), or as many at all with
    probability `walk` (a random walk on the plateau escapes where pure descent
    stalls), else undone. Runs until `reserve` seconds of the budget are left or the
    GPU count is down to `target` (a lower bound); each step charges deterministic
    time by the work it did, so a seed gives one plan. Skips move-counted (current)
    placements: the caller's CP-SAT LNS handles those. Returns
    the number of GPUs emptied.
    """
    n = prob.n_items
    u = prob.units
    movable = np.array([prob.num_gpu[i] == 1 and not prob.exclusive[i] and i not in prob.fixed
                        and i not in prob.current and pk.where[i] is not None
                        for i in range(n)], dtype=bool)
    if not movable.any():
        return 0
    pinned = np.zeros(prob.n_gpus, dtype=bool)
    for i in np.flatnonzero(~movable):
        if pk.where[i] is not None:
            pinned[list(pk.where[i])] = True
    size = (u.astype(np.float64) ** 2).sum(axis=1)
    area = u.sum(axis=1)
    full = float(prob.cap * prob.slots)
    gpu_area = prob.cap * prob.slots - pk.resid.sum(axis=1)  # kept up to date below
    rank = gpu_order(prob)
    stop = budget.iterations + max_iterations if max_iterations is not None else None
    emptied = 0

    while (not budget.done() and budget.plan_left() > reserve and int(pk.count.astype(bool).sum())
           > target and (stop is None or budget.iterations < stop)):
        budget.iterations += 1
        used = pk.used()
        pool = np.flatnonzero(used & ~pk.excl & ~pinned)
        if len(pool) < 2:
            break
        k = int(rng.integers(k_range[0], k_range[1] + 1))
        nth = min(int(rng.exponential(len(pool) / 10)), len(pool) - 1)
        first = int(pool[np.argpartition(gpu_area[pool], nth)[nth]])
        rest = pool[pool != first]
        others = rng.choice(rest, size=min(k - 1, len(rest)), replace=False)
        ruined = [first] + [int(g) for g in others]
        items = [i for g in ruined for i in sorted(pk.on_gpu[g]) if movable[i]]
        if not items:
            budget.dtime += RR_STEP_DTIME
            continue
        before = pk.cost(), int(used.sum())
        old = {i: pk.where[i] for i in items}
        delta: dict[int, int] = {}
        for i in items:
            g = old[i][0]
            pk.take(i)
            gpu_area[g] -= area[i]
            delta[g] = delta.get(g, 0) - int(area[i])
        if int(used.sum()) > RR_RECEIVERS:  # large fleets: a random sample receives
            recv = np.concatenate((rng.choice(np.flatnonzero(used), size=RR_RECEIVERS,
                                              replace=False), ruined))
        else:
            recv = np.flatnonzero(used)
        budget.dtime += RR_STEP_DTIME + RR_ELEM_DTIME * len(items) * len(recv) * prob.slots
        base = ~pk.excl[recv]
        jitter = size[items] * rng.uniform(1 - noise, 1 + noise, len(items))
        ok = True
        for j in np.argsort(-jitter, kind="stable"):
            i = items[j]
            cand = recv[base & (pk.count[recv] > 0) & prob.allowed(i)[recv]
                        & (pk.mem_free[recv] >= prob.mem[i])]
            fit = cand[(pk.resid[cand] >= u[i]).all(axis=1)]
            if len(fit):
                after = pk.resid[fit] - u[i]
                if MEM_WEIGHT and prob.mem[i]:
                    # where memory binds too: the tightest fit over both (as shares)
                    mem_after = (pk.mem_free[fit] - prob.mem[i]) / prob.gpu_mem[fit]
                    score = (after.min(axis=1) / prob.cap + MEM_WEIGHT * mem_after
                             + after.sum(axis=1) / (prob.cap * prob.slots) * 1e-3)
                    g = int(fit[np.argmin(score)])
                else:
                    g = int(fit[np.argmin(after.min(axis=1) * (prob.cap * prob.slots + 1)
                                          + after.sum(axis=1))])
            else:
                empty = [g for g in ruined if pk.count[g] == 0 and prob.allowed(i)[g]
                         and prob.gpu_mem[g] >= prob.mem[i]]
                if not empty:
                    ok = False
                    break
                g = min(empty, key=lambda x: (prob.gpu_price[x], rank[x]))
            pk.put(i, (g,))
            gpu_area[g] += area[i]
            delta[g] = delta.get(g, 0) + int(area[i])
        placed = [i for i in items if pk.where[i] is not None]
        if ok:
            after_key = pk.cost(), int(pk.used().sum())
            region = np.array(sorted(delta), dtype=np.int64)
            now = gpu_area[region] / full
            was = (gpu_area[region] - np.array([delta[g] for g in region])) / full
            keep = after_key < before or (after_key == before
                                          and (float((now ** 2).sum())
                                               >= float((was ** 2).sum()) - 1e-12
                                               or rng.random() < walk))
            if keep:
                emptied += before[1] - after_key[1]
                continue
        for i in placed:
            g = pk.where[i][0]
            pk.take(i)
            gpu_area[g] -= area[i]
        for i in items:
            pk.put(i, old[i])
            gpu_area[old[i][0]] += area[i]
    return emptied
