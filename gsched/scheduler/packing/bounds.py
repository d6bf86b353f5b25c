"""Lower bounds on the GPUs any plan needs: load, conflict cliques, the LP relaxation."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from gsched.scheduler.packing.problem import PackProblem


def load_lower_bound(prob: PackProblem, items: Iterable[int] | None = None) -> int:
    """ceil(max over slots of summed load / usable capacity); exclusive GPUs added whole."""
    idx = np.arange(prob.n_items) if items is None else np.fromiter(items, dtype=np.int64)
    if len(idx) == 0:
        return 0
    excl = prob.exclusive[idx]
    whole = int((prob.num_gpu[idx] * excl).sum())
    shared = idx[~excl]
    if len(shared) == 0:
        return whole
    tot = (prob.units[shared] * prob.num_gpu[shared, None]).sum(axis=0)
    return whole + int(math.ceil(tot.max() / prob.cap - 1e-9))


def _greedy_cliques(prob: PackProblem, max_classes: int = 4_000) -> list[list[int]]:
    """Large sets of pairwise-conflicting shared workloads, one per greedy order.

    Two workloads conflict when their summed load exceeds the usable capacity in some
    slot; a clique of them needs one GPU each. Only workloads above half the capacity
    somewhere can be in a clique with more than one member, and workloads with the same
    profile are then pairwise in conflict, so cliques are grown over *profile classes*
    (the `max_classes` largest, for time), each taken whole. Orders: conflict degree
    between classes (usually the best base for `lp_lower_bound`), degree weighted by
    GPUs, daily load, peak.
    """
    u = prob.units
    shared = np.flatnonzero(~prob.exclusive)
    big = shared[(2 * u[shared] > prob.cap).any(axis=1)]
    if len(big) == 0:
        return [[]]
    _, first, inv = np.unique(u[big], axis=0, return_index=True, return_inverse=True)
    inv = inv.ravel()
    rep = big[first]
    weight = np.bincount(inv, weights=prob.num_gpu[big], minlength=len(rep))
    keep = np.arange(len(rep))
    if len(rep) > max_classes:
        keep = np.argsort(-u[rep].max(axis=1), kind="stable")[:max_classes]
    rep, weight = rep[keep], weight[keep]
    conf = np.zeros((len(rep), len(rep)), dtype=bool)
    step = max(1, 2_000_000 // (len(rep) * prob.slots))
    for a in range(0, len(rep), step):
        conf[a:a + step] = (u[rep[a:a + step], None, :] + u[None, rep, :] > prob.cap).any(axis=2)
    np.fill_diagonal(conf, False)
    out: list[list[int]] = []
    for key in (conf.sum(axis=1), conf @ weight + weight, u[rep].sum(axis=1),
                u[rep].max(axis=1)):
        member = np.zeros(len(rep), dtype=bool)
        ok = np.ones(len(rep), dtype=bool)
        for k in np.argsort(-key, kind="stable"):
            if ok[k]:
                member[k] = True
                ok &= conf[k]
        clique = [int(i) for i in big[np.isin(inv, keep[member])]]
        if clique not in out:
            out.append(clique)
    return out


def _greedy_clique(prob: PackProblem) -> list[int]:
    """The largest (in GPUs) of `_greedy_cliques`."""
    return max(_greedy_cliques(prob), key=lambda c: int(prob.num_gpu[c].sum()))


def conflict_lower_bound(prob: PackProblem, clique: Sequence[int] | None = None) -> int:
    """Exclusive GPUs + a clique of pairwise-conflicting workloads + the load they leave.

    A clique (`_greedy_clique`) needs one GPU per member (a k-GPU member counts k).
    Every other workload must fit in what the clique GPUs leave, or in further GPUs:
    extra >= max_t (rest load_t - clique slack_t) / capacity.
    """
    if prob.n_items == 0:
        return 0
    excl = prob.exclusive
    whole = int((prob.num_gpu * excl).sum())
    u = prob.units
    clique = list(_greedy_clique(prob) if clique is None else clique)
    if not clique:
        return whole
    rest = np.setdiff1d(np.flatnonzero(~excl), clique)
    rest_load = (u[rest] * prob.num_gpu[rest, None]).sum(axis=0)
    slack = (prob.cap - u[clique]).sum(axis=0)
    extra = max(0, int(math.ceil((rest_load - slack).max() / prob.cap - 1e-9)))
    return whole + int(prob.num_gpu[clique].sum()) + extra


def _classes(units: np.ndarray, idx: np.ndarray, weight: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
    """Group `idx` by identical load profile: (representative, summed weight) per class."""
    if len(idx) == 0:
        return idx, idx
    _, first, inv = np.unique(units[idx], axis=0, return_index=True, return_inverse=True)
    return idx[first], np.bincount(inv.ravel(), weights=weight, minlength=len(first))


def lp_lower_bound(prob: PackProblem, max_nonzeros: int = 500_000,
                   clique: Sequence[int] | None = None, max_slots: int | None = None) -> int:
    """Clique bound with the rest placed by a linear programme instead of by slot totals.

    Clique members (`_greedy_clique`) each own a GPU. Every other shared workload goes,
    fractionally but *as a whole profile*, either onto clique GPUs whose member it is
    compatible with (their summed load fits in every slot) or onto y extra GPUs. Per
    slot: the load on a clique class's GPUs fits their slack, the load on extra GPUs
    fits y * capacity, and a GPU holds at most one workload above half the capacity in
    a slot. Workloads with one profile are aggregated (a class), which keeps the LP
    small; memory, models and node locality are dropped. Every integer plan is a
    solution of this LP, so exclusive + clique + ceil(y*) GPUs is a valid lower bound
    (y* from GLOP, rounded down by a tolerance far above its numerical error). Per
    clique class only the `max_slots` slots that can bind hardest are kept (by default
    as many as fit `max_nonzeros`); dropping constraints only weakens the bound.
    """
    from ortools.linear_solver import linear_solver_pb2, pywraplp

    if prob.n_items == 0:
        return 0
    excl = prob.exclusive
    whole = int((prob.num_gpu * excl).sum())
    clique = np.array(_greedy_clique(prob) if clique is None else clique, dtype=np.int64)
    rest = np.setdiff1d(np.flatnonzero(~excl), clique)
    if len(rest) == 0:
        return whole + int(prob.num_gpu[clique].sum())
    cap = float(prob.cap)
    u = prob.units
    ck, cm = _classes(u, clique, prob.num_gpu[clique].astype(float))
    rk, rn = _classes(u, rest, prob.num_gpu[rest].astype(float))
    ur = u[rk] / cap                                       # (K, T)
    big_r = 2 * u[rk] > prob.cap                           # (K, T)
    compat = np.zeros((len(rk), len(ck)), dtype=bool)
    step = max(1, 2_000_000 // max(1, len(ck) * prob.slots))
    for a in range(0, len(rk), step):
        compat[a:a + step] = (u[rk[a:a + step], None, :] + u[None, ck, :]
                              <= prob.cap).all(axis=2)
    if max_slots is None:
        max_slots = max(8, min(prob.slots, max_nonzeros // max(1, int(compat.sum()))))
    m = linear_solver_pb2.MPModelProto()
    m.variable.add(lower_bound=0.0, upper_bound=float(prob.n_gpus), objective_coefficient=1.0)
    # variable 1 + k: class k on extra GPUs; then one per compatible (k, c) pair
    for k in range(len(rk)):
        m.variable.add(lower_bound=0.0, upper_bound=float(rn[k]))
    pk_, pc_ = np.nonzero(compat)
    pair_var = 1 + len(rk) + np.arange(len(pk_))
    for k in pk_:
        m.variable.add(lower_bound=0.0, upper_bound=float(rn[k]))

    def row(idx: np.ndarray, coef: np.ndarray, lo: float, hi: float) -> None:
        c = m.constraint.add(lower_bound=lo, upper_bound=hi)
        c.var_index.extend(idx.tolist())
        c.coefficient.extend(coef.tolist())

    inf = math.inf
    for k in range(len(rk)):
        row(np.concatenate(([1 + k], pair_var[pk_ == k])),
            np.ones(1 + int((pk_ == k).sum())), float(rn[k]), float(rn[k]))
    ext = 1 + np.arange(len(rk))
    for t in range(prob.slots):
        nz = ur[:, t] > 0
        row(np.concatenate(([0], ext[nz])), np.concatenate(([-1.0], ur[nz, t])), -inf, 0.0)
        b = big_r[:, t]
        if b.any():
            row(np.concatenate(([0], ext[b])), np.concatenate(([-1.0], np.ones(b.sum()))),
                -inf, 0.0)
    for c in range(len(ck)):
        sel = pc_ == c
        ks, vs = pk_[sel], pair_var[sel]
        if len(ks) == 0:
            continue
        slack = (prob.cap - u[ck[c]]) / cap * cm[c]
        worst = (ur[ks] * rn[ks, None]).sum(axis=0)
        tight = np.flatnonzero(worst > slack + 1e-12)
        if len(tight) > max_slots:
            tight = np.sort(tight[np.argsort(slack[tight] - worst[tight],
                                             kind="stable")[:max_slots]])
        for t in tight:
            nz = ur[ks, t] > 0
            row(vs[nz], ur[ks[nz], t], -inf, float(slack[t]))
        # at most one workload above half of what the member leaves, per GPU and slot
        halves = 2 * u[rk[ks]] > (prob.cap - u[ck[c]])[None, :]     # (ks, T)
        over = (rn[ks] @ halves) - cm[c]
        tight = np.flatnonzero(over > 1e-9)
        if len(tight) > max_slots:
            tight = np.sort(tight[np.argsort(-over[tight], kind="stable")[:max_slots]])
        for t in tight:
            b = halves[:, t]
            row(vs[b], np.ones(int(b.sum())), -inf, float(cm[c]))
    solver = pywraplp.Solver.CreateSolver("GLOP")
    if solver is None or solver.LoadModelFromProto(m) != "":
        return conflict_lower_bound(prob, clique=clique)
    solver.SetSolverSpecificParametersAsString("use_dual_simplex: true")  # ~2x faster here
    if solver.Solve() != pywraplp.Solver.OPTIMAL:
        return conflict_lower_bound(prob, clique=clique)
    y = solver.Objective().Value()
    extra = max(0, int(math.ceil(y - 1e-4)))
    return whole + int(prob.num_gpu[clique].sum()) + extra


def lower_bound(prob: PackProblem) -> int:
    """The best of four valid bounds: load (the issue's ceil(max_t sum / capacity)),
    per-slot conflicts (GPU-units above half the capacity in one slot cannot share),
    the clique bound of `conflict_lower_bound` (over several greedy cliques) and its LP
    strengthening `lp_lower_bound` (on the degree-ordered clique and the best one)."""
    lb = load_lower_bound(prob)
    if prob.n_items:
        big = (2 * prob.units > prob.cap) | prob.exclusive[:, None]
        lb = max(lb, int((big * prob.num_gpu[:, None]).sum(axis=0).max()))
        cliques = _greedy_cliques(prob)
        conf = [conflict_lower_bound(prob, clique=c) for c in cliques]
        lb = max(lb, *conf)
        for k in sorted({0, int(np.argmax(conf))}):
            lb = max(lb, lp_lower_bound(prob, clique=cliques[k]))
    return lb
