"""The LP bound: a clique's GPUs, plus the rest placed fractionally by a linear programme.

Clique members each own their GPUs. Every other shared workload goes, fractionally but
*as a whole profile*, either onto the GPUs of a clique class it is compatible with
(their summed load fits in every slot, their memory fits a GPU both may use) or onto y
extra GPUs. Per slot: the load on a clique class's GPUs fits their room (a k-GPU member
leaves room on each of its k GPUs), the load on extra GPUs fits y * capacity, and a GPU
holds at most one workload above half the room left in a slot; memory likewise (extra
GPUs at the largest GPU's memory). Workloads alike are one column (a class). Node
locality and fixed placements are dropped. Every integer plan is a solution of this LP,
so exclusive + clique + ceil(y*) GPUs is a lower bound (y* from GLOP, rounded down by a
tolerance far above its numerical error). A GLOP run that hits its time box proves
nothing and is reported as cut.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from gsched.scheduler.packing.problem import PackProblem

#: LP non-zeros a second of bound budget affords (building rows is Python work)
NNZ_PER_SECOND = 150_000


def _classes(key: np.ndarray, idx: np.ndarray, weight: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
    """Group `idx` by identical key rows: (representative, summed weight) per class."""
    if len(idx) == 0:
        return idx, idx.astype(float)
    _, first, inv = np.unique(key[idx], axis=0, return_index=True, return_inverse=True)
    return idx[first], np.bincount(inv.ravel(), weights=weight, minlength=len(first))


def lp_bound(prob: PackProblem, clique: Sequence[int], lo: np.ndarray, allowed: np.ndarray,
             tmem: np.ndarray, dtime: float = math.inf, wall: float | None = None,
             max_nonzeros: int = 500_000) -> tuple[int | None, str]:
    """(bound, "") or (None, why it was cut). `dtime`: GLOP deterministic time limit;
    `wall`: wall-clock seconds (a guard). The LP's size is capped by `dtime` alone."""
    from ortools.linear_solver import linear_solver_pb2, pywraplp

    excl = prob.exclusive
    k_gpu = prob.num_gpu
    whole = int((k_gpu * excl).sum())
    clique = np.asarray(clique, dtype=np.int64)
    rest = np.setdiff1d(np.flatnonzero(~excl), clique)
    base = whole + int(k_gpu[clique].sum())
    if len(rest) == 0:
        return base, ""
    if math.isfinite(dtime):  # the size cap follows the deterministic budget, never the clock
        max_nonzeros = min(max_nonzeros, int(dtime * NNZ_PER_SECOND))
    cap = float(prob.cap)
    key = np.concatenate((lo, prob.mem[:, None], allowed.astype(np.int64)), axis=1)
    ck, cm = _classes(key, clique, k_gpu[clique].astype(float))
    rk, rn = _classes(key, rest, k_gpu[rest].astype(float))
    ur = lo[rk] / cap                                       # (K, T)
    big_r = 2 * lo[rk] > prob.cap                           # (K, T)
    top = float(prob.gpu_mem.max(initial=0)) or 1.0
    common_mem = np.zeros((len(rk), len(ck)))
    for t in range(len(tmem)):
        common_mem = np.maximum(common_mem, np.outer(allowed[rk, t], allowed[ck, t]) * tmem[t])
    compat = prob.mem[rk, None] + prob.mem[None, ck] <= common_mem
    compat &= (allowed[rk].astype(np.int64) @ allowed[ck].T.astype(np.int64)) > 0
    step = max(1, 2_000_000 // max(1, len(ck) * prob.slots))
    for a in range(0, len(rk), step):
        compat[a:a + step] &= (lo[rk[a:a + step], None, :] + lo[None, ck, :]
                               <= prob.cap).all(axis=2)
    n_pairs = int(compat.sum())
    fixed_nnz = 2 * n_pairs + 2 * len(rk) * prob.slots
    if fixed_nnz > max_nonzeros:
        return None, (f"LP too large for the budget ({fixed_nnz:,} non-zeros at least, "
                      f"{max_nonzeros:,} affordable)")
    max_slots = max(4, min(prob.slots, (max_nonzeros - fixed_nnz) // max(1, 2 * n_pairs)))
    m = linear_solver_pb2.MPModelProto()
    m.variable.add(lower_bound=0.0, upper_bound=float(prob.n_gpus), objective_coefficient=1.0)
    for k in range(len(rk)):  # variable 1 + k: class k on extra GPUs
        m.variable.add(lower_bound=0.0, upper_bound=float(rn[k]))
    pk_, pc_ = np.nonzero(compat)
    pair_var = 1 + len(rk) + np.arange(len(pk_))
    for k in pk_:  # then one per compatible (k, c) pair
        m.variable.add(lower_bound=0.0, upper_bound=float(rn[k]))

    def row(idx: np.ndarray, coef: np.ndarray, lo_: float, hi: float) -> None:
        c = m.constraint.add(lower_bound=lo_, upper_bound=hi)
        c.var_index.extend(idx.tolist())
        c.coefficient.extend(coef.tolist())

    inf = math.inf
    order = np.argsort(pk_, kind="stable")
    starts = np.searchsorted(pk_[order], np.arange(len(rk) + 1))
    for k in range(len(rk)):
        vs = pair_var[order[starts[k]:starts[k + 1]]]
        row(np.concatenate(([1 + k], vs)), np.ones(1 + len(vs)), float(rn[k]), float(rn[k]))
    ext = 1 + np.arange(len(rk))
    for t in range(prob.slots):
        nz = ur[:, t] > 0
        row(np.concatenate(([0], ext[nz])), np.concatenate(([-1.0], ur[nz, t])), -inf, 0.0)
        b = big_r[:, t]
        if b.any():
            row(np.concatenate(([0], ext[b])), np.concatenate(([-1.0], np.ones(b.sum()))),
                -inf, 0.0)
    mr = prob.mem[rk] / top
    if mr.any():
        nz = mr > 0
        row(np.concatenate(([0], ext[nz])), np.concatenate(([-1.0], mr[nz])), -inf, 0.0)
    cap_mem = (allowed[ck] * tmem[None, :]).max(axis=1, initial=0)
    for c in range(len(ck)):
        sel = pc_ == c
        ks, vs = pk_[sel], pair_var[sel]
        if len(ks) == 0:
            continue
        room = (prob.cap - lo[ck[c]]) / cap * cm[c]
        worst = (ur[ks] * rn[ks, None]).sum(axis=0)
        tight = np.flatnonzero(worst > room + 1e-12)
        if len(tight) > max_slots:
            tight = np.sort(tight[np.argsort(room[tight] - worst[tight],
                                             kind="stable")[:max_slots]])
        for t in tight:
            nz = ur[ks, t] > 0
            row(vs[nz], ur[ks[nz], t], -inf, float(room[t]))
        halves = 2 * lo[rk[ks]] > (prob.cap - lo[ck[c]])[None, :]     # (ks, T)
        over = (rn[ks] @ halves) - cm[c]
        tight = np.flatnonzero(over > 1e-9)
        if len(tight) > max_slots:
            tight = np.sort(tight[np.argsort(-over[tight], kind="stable")[:max_slots]])
        for t in tight:
            b = halves[:, t]
            row(vs[b], np.ones(int(b.sum())), -inf, float(cm[c]))
        mem_room = float(cap_mem[c] - prob.mem[ck[c]]) * cm[c]
        need = prob.mem[rk[ks]].astype(float)
        if (need * rn[ks]).sum() > mem_room + 1e-9:
            nz = need > 0
            row(vs[nz], need[nz] / top, -inf, mem_room / top)
    solver = pywraplp.Solver.CreateSolver("GLOP")
    if solver is None or solver.LoadModelFromProto(m) != "":
        return None, "GLOP unavailable"
    params = "use_dual_simplex: true"
    if math.isfinite(dtime):
        params += f" max_deterministic_time: {max(dtime, 0.01):.3f}"
    solver.SetSolverSpecificParametersAsString(params)
    if wall is not None:
        solver.SetTimeLimit(max(1, int(wall * 1000)))
    if solver.Solve() != pywraplp.Solver.OPTIMAL:
        return None, "the LP did not finish within its time box"
    y = solver.Objective().Value()
    return base + max(0, int(math.ceil(y - 1e-4))), ""


def lp_lower_bound(prob: PackProblem, clique: Sequence[int] | None = None) -> int:
    """The LP bound on the largest greedy clique, no time box (tests, small instances);
    the clique bound if GLOP fails."""
    from gsched.scheduler.packing import bounds

    lo = bounds.floor_units(prob)
    allowed, tmem, _ = bounds.type_table(prob)
    if prob.n_items == 0:
        return 0
    mcap = bounds.item_mem_cap(prob, allowed, tmem)
    if clique is None:
        cc = bounds.conflict_classes(prob, lo, allowed, tmem, np.flatnonzero(~prob.exclusive),
                                     4_000)
        clique = max(bounds.greedy_cliques(prob, cc),
                     key=lambda c: bounds.clique_bound_of(prob, c, lo, mcap))
    v, _ = lp_bound(prob, clique, lo, allowed, tmem)
    return v if v is not None else bounds.clique_bound_of(prob, clique, lo, mcap)
