"""Large-neighbourhood search with CP-SAT: free a few GPUs' workloads, re-pack them.

Each step costs the same at 100 or 10,000 workloads; a step is kept when it is cheaper.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from gsched.scheduler.packing.cpsat import SubModel, SubResult, build_model, solve_model
from gsched.scheduler.packing.greedy import Packing, fit_one, gpu_order, has_exclusive
from gsched.scheduler.packing.problem import DTIME_PER_SECOND, MIN_STEP_DTIME, PackProblem

#: deterministic time charged per GPU-slot element of an eject fit test
EJECT_ELEM_DTIME = 4e-10


@dataclass
class Budget:
    """What the search may still spend: deterministic time (CP-SAT's own measure, and a
    work count for the numpy steps) under a wall-clock deadline that is a hard guard.

    With `deterministic`, `time_limit` is the search's deterministic budget (seconds of
    deterministic time / DTIME_PER_SECOND) and the stop does not depend on the clock
    unless the `deadline` (perf_counter) comes first; `stopped_by` says which."""

    time_limit: float
    deterministic: bool
    max_iterations: int
    deadline: float | None = None
    start: float = field(default_factory=time.perf_counter)
    dtime: float = 0.0
    iterations: int = 0
    stopped_by: str = ""

    def wall_left(self) -> float:
        end = self.deadline if self.deadline is not None else self.start + self.time_limit
        return end - time.perf_counter()

    def left(self) -> float:
        """Seconds (wall, or deterministic-time converted) still available."""
        wall_left = self.wall_left()
        if self.deterministic:
            return min(self.time_limit - self.dtime / DTIME_PER_SECOND, wall_left)
        return wall_left

    def plan_left(self) -> float:
        """What a step may plan to spend: the deterministic budget left when
        deterministic (never the clock, so plans do not depend on machine load; the
        deadline guards through `done`), else the wall clock left."""
        if self.deterministic:
            return self.time_limit - self.dtime / DTIME_PER_SECOND
        return self.wall_left()

    def done(self) -> bool:
        if self.iterations >= self.max_iterations:
            self.stopped_by = self.stopped_by or "iteration cap"
            return True
        if self.wall_left() <= 0.005:
            self.stopped_by = self.stopped_by or "wall-clock deadline"
            return True
        if self.left() <= 0.005:
            self.stopped_by = self.stopped_by or ("deterministic budget" if self.deterministic
                                                  else "time limit")
            return True
        return False


def _region_key(prob: PackProblem, pk: Packing, gpus: Sequence[int],
                items: Iterable[int]) -> tuple[float, int, int]:
    """Lexicographic quality of a region: (GPU cost, moves, summed peak units)."""
    g = np.asarray(list(gpus), dtype=np.int64)
    used = pk.count[g] > 0
    cost = float(prob.gpu_price[g][used].sum())
    peak = int((prob.cap - pk.resid[g][used].min(axis=1)).sum()) if used.any() else 0
    moves = sum(1 for i in items if i in prob.current and pk.where[i] != prob.current[i])
    return round(cost, 6), moves, peak


def solve_region(prob: PackProblem, pk: Packing, gpus: list[int], budget: Budget,
                  seed: int, workers: int, sub_limit: float, move_budget: int | None,
                  full: bool = False, victims: Sequence[int] = (),
                  objective: bool = True, phases: bool = False) -> SubResult | None:
    """Free the movable workloads lying wholly on `gpus` + `victims`, re-pack them with
    CP-SAT on `gpus` only (the victims are to be emptied) and keep the result when the
    region's (cost, summed peak, moves) beats the incumbent's."""
    gset = set(gpus) | set(victims)
    items = sorted({i for g in gset for i in pk.on_gpu[g]
                    if i not in prob.fixed and set(pk.where[i] or ()) <= gset})
    if not items and not full:
        return None
    hint = {i: pk.where[i] for i in items}
    vset = set(victims)
    model_hint = {i: w for i, w in hint.items() if not set(w or ()) & vset}
    for i in items:
        pk.take(i)
    garr = np.array(gpus, dtype=np.int64)
    background = prob.cap - pk.resid[garr]
    bg_mem = prob.gpu_mem[garr] - pk.mem_free[garr]
    bg_used = pk.count[garr] > 0
    bg_excl = has_exclusive(prob, pk, garr)
    outside_moves = 0
    if move_budget is not None:
        outside_moves = sum(1 for i, cur in prob.current.items()
                            if i not in hint and pk.where[i] != cur)
    mb = None if move_budget is None else max(move_budget - outside_moves, 0)
    args = (prob, items, gpus, background, bg_mem, bg_used, bg_excl)
    sub = build_model(*args, model_hint, mb, objective=objective, secondary=not phases)
    for i in items:
        pk.put(i, hint[i])  # the incumbent stays until something better is found
    region = sorted(gset)
    before = _region_key(prob, pk, region, items)

    def run(model: SubModel, share: float) -> SubResult:
        limit = min(sub_limit * share, max(budget.plan_left(), 0.01))
        # deterministic: only the run's deadline guards a call (a per-call wall cap
        # would fire on a busy machine and make the plan depend on the load)
        wall = max(budget.wall_left() if budget.deterministic
                   else min(limit * 2, budget.wall_left()), 0.01)
        r = solve_model(model, prob, limit, seed, workers,
                        deterministic_time=limit * DTIME_PER_SECOND if budget.deterministic
                        else None, wall_guard=wall)
        budget.dtime += max(r.dtime, MIN_STEP_DTIME)
        return r

    res = run(sub, 0.7 if phases else 1.0)
    if phases and res.status == "OPTIMAL" and res.assignment is not None:
        # Phase 2: cost fixed at its proven optimum, now the lowest summed peak.
        first = res
        cap = int(round(res.objective or 0))
        sub2 = build_model(*args, res.assignment, mb, cost_cap=cap)
        res = run(sub2, 0.3)
        if res.assignment is None:
            res = first
        else:
            res.status = "OPTIMAL" if res.status == "OPTIMAL" else "COST_OPTIMAL"
    budget.iterations += 1
    if res.assignment is not None:
        for i in items:
            pk.take(i)
        for i in items:
            pk.put(i, res.assignment[i])
        if _region_key(prob, pk, region, items) >= before:  # not better: keep the incumbent
            for i in items:
                pk.take(i)
            for i in items:
                pk.put(i, hint[i])
    return res


def neighbourhood(prob: PackProblem, pk: Packing, rng: np.random.Generator,
                   size: int) -> tuple[list[int], list[int]]:
    """(victims, receivers): one or two lightly loaded GPUs to empty, and GPUs with room
    to take their work.

    Victims are drawn from the least filled quarter of the used GPUs that hold neither
    fixed nor exclusive work; receivers from the other used GPUs of the same models,
    with probability proportional to their spare capacity over the day.
    """
    used = pk.used() & ~pk.excl
    pinned = np.zeros(prob.n_gpus, dtype=bool)
    for gpus in prob.fixed.values():
        pinned[list(gpus)] = True
    pool_all = np.flatnonzero(used & ~pinned)
    if len(pool_all) == 0:
        return [], []
    fill = (prob.cap - pk.resid[pool_all]).sum(axis=1)
    order = pool_all[np.argsort(fill, kind="stable")]
    pool = order[: max(4, len(order) // 4)]
    n_victims = int(rng.integers(1, 3))
    victims = [int(v) for v in rng.choice(pool, size=min(n_victims, len(pool)), replace=False)]
    models = {prob.gpu_model[v] for v in victims}
    vset = set(victims)
    others = np.array([g for g in np.flatnonzero(used) if g not in vset
                       and prob.gpu_model[g] in models], dtype=np.int64)
    receivers: list[int] = []
    if len(others):
        weight = _swap_compatibility(prob, pk, victims, others)
        if rng.random() < 0.5 or not weight.any():
            weight = pk.resid[others].sum(axis=1).astype(np.float64)
        weight = weight + 1e-3 * weight.max() + 1e-9
        k = min(size, len(others))
        receivers = [int(g) for g in rng.choice(others, size=k, replace=False,
                                                p=weight / weight.sum())]
    return victims, sorted(receivers)


def _swap_compatibility(prob: PackProblem, pk: Packing, victims: list[int],
                        others: np.ndarray) -> np.ndarray:
    """Per candidate receiver, how many victim workloads it could take if one of its own
    workloads stepped aside: GPUs where an exchange can work, so the sub-model is not
    a hopeless knapsack."""
    items = [i for v in victims for i in pk.on_gpu[v]]
    score = np.zeros(len(others))
    if not items:
        return score
    for i in items:
        slack = pk.resid[others] - prob.units[i]                     # (R, T)
        fits = (slack >= 0).all(axis=1)
        for r in np.flatnonzero(~fits):
            g = int(others[r])
            if any(not prob.exclusive[k] and (slack[r] + prob.units[k] >= 0).all()
                   for k in pk.on_gpu[g]):
                fits[r] = True
        score += fits
    return score


def eject(prob: PackProblem, pk: Packing, budget: Budget,
          move_budget: int | None = None, passes: int = 1_000,
          only: Sequence[int] | None = None, share: float = 1.0) -> int:
    """Numpy local search before CP-SAT: empty lightly filled GPUs by best-fit
    re-insertion of their workloads into the other used GPUs; undo when one does not fit.

    Deterministic and cheap (a vector test per workload), it harvests the easy gains
    greedy leaves behind: GPUs opened early whose work now fits in later GPUs' valleys.
    `only` limits the victims to those GPUs (after an LNS re-pack), `share` to the least
    filled fraction of them. Returns the number of GPUs emptied.
    """
    rank = gpu_order(prob)
    pinned = np.zeros(prob.n_gpus, dtype=bool)
    for gpus in prob.fixed.values():
        pinned[list(gpus)] = True
    emptied, improved = 0, True
    while improved and passes > 0 and not budget.done():
        improved = False
        passes -= 1
        mask = pk.used() & ~pk.excl & ~pinned
        if only is not None:
            keep = np.zeros(prob.n_gpus, dtype=bool)
            keep[list(only)] = True
            mask &= keep
        cand = np.flatnonzero(mask)
        fill = (prob.cap - pk.resid[cand]).sum(axis=1)
        order = cand[np.argsort(fill, kind="stable")]
        for v in order[: max(1, int(math.ceil(len(order) * share)))]:
            if budget.done():
                break
            v = int(v)
            items = sorted(pk.on_gpu[v], key=lambda i: (-int(prob.units[i].max()), i))
            if not items or any(prob.num_gpu[i] != 1 for i in items):
                continue
            old = {i: pk.where[i] for i in items}
            for i in items:
                pk.take(i)
            used = pk.used()
            used[v] = False
            placed = []
            budget.dtime += EJECT_ELEM_DTIME * len(items) * int(used.sum()) * prob.slots
            for i in items:
                gpus = fit_one(prob, pk, i, prob.units[i], "best", rank, used,
                                allow_empty=False)
                if gpus is None:
                    break
                pk.put(i, gpus)
                placed.append(i)
            ok = len(placed) == len(items) and (move_budget is None
                                                or pk.moves() <= move_budget)
            if ok:
                emptied += 1
                improved = True
                continue
            for i in placed:
                pk.take(i)
            for i in items:
                pk.put(i, old[i])
        budget.iterations += 1
    return emptied




def cpsat_start(prob: PackProblem, max_vars: int, seconds: float, seed: int) -> Packing | None:
    """A first plan by CP-SAT when both greedy rules leave a workload out (a nearly full
    cluster); only for models of at most `max_vars` placement variables, else None."""
    pk = Packing(prob)
    for i, gpus in prob.fixed.items():
        pk.put(i, gpus)
    items = [i for i in range(prob.n_items) if i not in prob.fixed]
    if sum(int(prob.allowed(i).sum()) for i in items) > max_vars:
        return None
    gpus = list(range(prob.n_gpus))
    garr = np.arange(prob.n_gpus)
    sub = build_model(prob, items, gpus, prob.cap - pk.resid, prob.gpu_mem - pk.mem_free,
                      pk.count > 0, has_exclusive(prob, pk, garr), objective=False)
    res = solve_model(sub, prob, seconds, seed, 1, deterministic_time=seconds * DTIME_PER_SECOND)
    if res.assignment is None:
        return None
    for i in items:
        pk.put(i, res.assignment[i])
    return pk
