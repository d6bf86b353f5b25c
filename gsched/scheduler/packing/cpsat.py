"""The CP-SAT model of a packing sub-problem: build it, solve it.

One model over a set of workloads and GPUs; everything else is background load.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from ortools.sat.python import cp_model

from gsched.scheduler.packing.problem import PackProblem


@dataclass
class SubModel:
    """A CP-SAT model over `items` x `gpus` and the handles to read a solution back."""

    model: cp_model.CpModel
    items: list[int]
    gpus: list[int]
    x: dict[tuple[int, int], cp_model.IntVar]
    used: dict[int, cp_model.IntVar | int]
    peak: dict[int, cp_model.IntVar]
    moved: dict[int, cp_model.IntVar | int]
    weight: int  # objective weight of one unit of (scaled) GPU price


@dataclass
class SubResult:
    status: str
    assignment: dict[int, tuple[int, ...]] | None
    objective: float | None
    bound: float | None
    wall: float
    dtime: float


def _price_units(prob: PackProblem) -> np.ndarray:
    """GPU prices as small positive integers (cents), so the objective stays integral."""
    return np.maximum(np.rint(prob.gpu_price * 100).astype(np.int64), 1)


def _dominant_slots(rows: np.ndarray) -> np.ndarray:
    """Slots not dominated by another slot (every row <= there): only they can bind."""
    t = rows.shape[1]
    if t <= 1:
        return np.arange(t)
    le = (rows[:, :, None] <= rows[:, None, :]).all(axis=0)  # le[a, b]: a dominated by b
    eq = le & le.T
    idx = np.arange(t)
    dominated = (le & ~eq).any(axis=1) | (eq & (idx[None, :] < idx[:, None])).any(axis=1)
    return np.flatnonzero(~dominated)


def build_model(prob: PackProblem, items: Sequence[int], gpus: Sequence[int],
                background: np.ndarray, bg_mem: np.ndarray, bg_used: np.ndarray,
                bg_exclusive: np.ndarray, hint: dict[int, tuple[int, ...]] | None = None,
                move_budget: int | None = None, objective: bool = True,
                secondary: bool = True, cost_cap: int | None = None) -> SubModel:
    """CP-SAT model placing `items` on `gpus`, whose other load is `background`.

    background: (len(gpus), T) load units already on each GPU from workloads not in the
    model; bg_mem / bg_used / bg_exclusive likewise. Boolean x[i, g] places item i on
    GPU g; multi-GPU items choose one node z[i, n] and exactly `num_gpu` GPUs on it.
    Constraints per GPU: per (dominant) slot, load <= peak[g] <= cap * used[g];
    memory; exclusive items alone. Objective: price * used (weighted to dominate), then
    moves, then summed peak. With `objective=False` it is a pure feasibility model
    (capacity rows only), which CP-SAT answers much faster: LNS uses it to ask "can
    these GPUs absorb the victims' work?". With `secondary=False` only the GPU cost
    is minimised (fast to prove); `cost_cap` bounds it, for a second, peak-only phase.
    """
    m = cp_model.CpModel()
    items = list(items)
    gpus = list(gpus)
    gi = {g: k for k, g in enumerate(gpus)}
    x: dict[tuple[int, int], cp_model.IntVar] = {}
    on: dict[int, list[tuple[int, cp_model.IntVar]]] = {g: [] for g in gpus}
    gset = np.array(gpus, dtype=np.int64)
    for i in items:
        allowed = gset[prob.allowed(i)[gset]]
        k = int(prob.num_gpu[i])
        if k == 1:
            vs = []
            for g in allowed:
                v = m.new_bool_var(f"x{i}_{g}")
                x[(i, int(g))] = v
                on[int(g)].append((i, v))
                vs.append(v)
            if not vs:
                m.add_bool_or([])  # no allowed GPU: infeasible sub-model
                continue
            m.add_exactly_one(vs)
        else:
            zs = []
            for n in np.unique(prob.gpu_node[allowed]):
                ng = allowed[prob.gpu_node[allowed] == n]
                if len(ng) < k:
                    continue
                z = m.new_bool_var(f"z{i}_{n}")
                zs.append(z)
                vs = []
                for g in ng:
                    v = m.new_bool_var(f"x{i}_{g}")
                    x[(i, int(g))] = v
                    on[int(g)].append((i, v))
                    vs.append(v)
                    m.add_implication(v, z)
                m.add(sum(vs) == k * z)
            if zs:
                m.add_exactly_one(zs)
            else:
                m.add_bool_or([])
    rows = np.vstack([prob.units[items]] + [background]) if items else background
    keep = _dominant_slots(rows) if len(rows) else np.arange(prob.slots)
    price = _price_units(prob)
    move_weight = prob.cap * len(gpus) + 1  # one move outweighs any summed peak
    weight = move_weight * (len(items) + 1) if secondary else 1  # outweighs moves + peaks
    cost_terms = []
    used: dict[int, cp_model.IntVar | int] = {}
    peak: dict[int, cp_model.IntVar] = {}
    obj = []
    for g in gpus:
        k = gi[g]
        here = on[g]
        bg = background[k]
        if bg_used[k]:
            used[g] = 1
        elif here:
            u = m.new_bool_var(f"used{g}")
            used[g] = u
            for _, v in here:
                m.add_implication(v, u)
            m.add_bool_or([v for _, v in here]).only_enforce_if(u)
        else:
            used[g] = 0
        if not here:
            continue
        if not objective:
            for t in keep:
                terms = [(int(prob.units[i, t]), v) for i, v in here if prob.units[i, t]]
                if terms and sum(c for c, _ in terms) + int(bg[t]) > prob.cap:
                    m.add(sum(c * v for c, v in terms) <= prob.cap - int(bg[t]))
        else:
            p = m.new_int_var(int(bg.max()), prob.cap, f"peak{g}")
            peak[g] = p
            for t in keep:
                terms = [(int(prob.units[i, t]), v) for i, v in here if prob.units[i, t]]
                if terms:
                    m.add(sum(c * v for c, v in terms) + int(bg[t]) <= p)
            if secondary:
                obj.append(p)
            if not isinstance(used[g], int):
                m.add(p <= prob.cap * used[g])
                m.add(p == 0).only_enforce_if(~used[g])
                obj.append(int(price[g]) * weight * used[g])
                cost_terms.append(int(price[g]) * used[g])
        mem_terms = [(int(prob.mem[i]), v) for i, v in here if prob.mem[i]]
        if mem_terms:
            m.add(sum(c * v for c, v in mem_terms) <= int(prob.gpu_mem[g] - bg_mem[k]))
        ex = [v for i, v in here if prob.exclusive[i]]
        if ex:
            if bg_used[k]:
                for v in ex:
                    m.add(v == 0)
            else:
                rest = [w for i, w in here if not prob.exclusive[i]]
                m.add(sum(ex) <= 1)
                for v in ex:
                    if rest:
                        m.add(sum(rest) == 0).only_enforce_if(v)
        if bg_exclusive[k]:
            for _, v in here:
                m.add(v == 0)
    groups = _break_symmetry(m, prob, items, gpus, x, used, bg_used, bg_mem)
    if hint and groups:
        hint = _relabel_hint(items, groups, hint)
    moved: dict[int, cp_model.IntVar | int] = {}
    for i in items:
        cur = prob.current.get(i)
        if cur is None:
            continue
        if not all((i, g) in x for g in cur):
            moved[i] = 1
            continue
        stay = m.new_bool_var(f"stay{i}")
        for g in cur:
            m.add_implication(stay, x[(i, g)])
        m.add_bool_or([x[(i, g)].Not() for g in cur] + [stay])
        moved[i] = 1 - stay
    if move_budget is not None and moved:
        m.add(sum(moved.values()) <= move_budget)
    if moved and secondary:
        obj.append(move_weight * sum(moved.values()))
    if cost_cap is not None and cost_terms:
        m.add(sum(cost_terms) <= cost_cap)
    if objective:
        m.minimize(sum(obj))
    if hint:
        for (i, g), v in x.items():
            m.add_hint(v, g in hint.get(i, ()))
    return SubModel(m, items, gpus, x, used, peak, moved, weight)


def _break_symmetry(m: cp_model.CpModel, prob: PackProblem, items: list[int], gpus: list[int],
                    x: dict[tuple[int, int], cp_model.IntVar], used: dict,
                    bg_used: np.ndarray, bg_mem: np.ndarray) -> list[list[int]]:
    """Empty GPUs of one type are interchangeable when no multi-GPU workload is in play:
    open them in order, and let the j-th workload use only the first j+1 of them (the
    classic bin-packing symmetry break; without it CP-SAT wanders among relabellings).
    Returns the groups of interchangeable GPUs, in their imposed order."""
    if any(prob.num_gpu[i] > 1 or i in prob.current for i in items):
        return []  # node locality or move counting make GPU identity matter
    groups: dict[tuple, list[int]] = {}
    for k, g in enumerate(gpus):
        if not bg_used[k] and bg_mem[k] == 0 and not isinstance(used[g], int):
            groups.setdefault((prob.gpu_model[g], int(prob.gpu_mem[g]),
                               float(prob.gpu_price[g])), []).append(g)
    for members in groups.values():
        for a, b in zip(members, members[1:], strict=False):
            m.add_implication(used[b], used[a])
        for j, i in enumerate(items):
            for g in members[j + 1:]:
                if (i, g) in x:
                    m.add(x[(i, g)] == 0)
    return list(groups.values())


def _relabel_hint(items: list[int], groups: list[list[int]],
                  hint: dict[int, tuple[int, ...]]) -> dict[int, tuple[int, ...]]:
    """Rename the hint's GPUs inside each interchangeable group in order of first use, so
    the hint satisfies the symmetry break (else CP-SAT would have to repair it)."""
    rename: dict[int, int] = {}
    for members in groups:
        member = set(members)
        nxt = 0
        for i in items:
            for g in hint.get(i, ()):
                if g in member and g not in rename:
                    rename[g] = members[nxt]
                    nxt += 1
    return {i: tuple(rename.get(g, g) for g in gs) for i, gs in hint.items()}


def solve_model(sub: SubModel, prob: PackProblem, time_limit: float, seed: int = 0,
                workers: int = 1, deterministic_time: float | None = None,
                wall_guard: float | None = None) -> SubResult:
    """Solve; returns the assignment for optimal or feasible, None for infeasible/unknown."""
    s = cp_model.CpSolver()
    s.parameters.max_time_in_seconds = max(time_limit, 0.01)
    if deterministic_time is not None:
        # The deterministic limit must be the one that binds; wall time is a far guard.
        s.parameters.max_deterministic_time = max(deterministic_time, 0.01)
        s.parameters.max_time_in_seconds = (max(10 * time_limit, 5.0) if wall_guard is None
                                            else max(wall_guard, 0.01))
    s.parameters.random_seed = seed
    s.parameters.num_workers = workers
    if workers > 1 and deterministic_time is not None:
        s.parameters.interleave_search = True
    status = s.solve(sub.model)
    name = s.status_name(status)
    if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        out: dict[int, list[int]] = {i: [] for i in sub.items}
        for (i, g), v in sub.x.items():
            if s.boolean_value(v):
                out[i].append(g)
        return SubResult(name, {i: tuple(sorted(g)) for i, g in out.items()},
                         s.objective_value, s.best_objective_bound, s.wall_time,
                         s.deterministic_time)
    return SubResult(name, None, None, None, s.wall_time, s.deterministic_time)
