"""Sound lower bounds on the GPUs any plan needs, each cheap or time-boxed.

Every bound here is a relaxation of the float problem `check_plan` checks: loads are
rounded *down* to 1/1000 of a GPU (the packer rounds up, so a plan it finds is feasible
in floats, and a bound on floored loads is below every float-feasible plan), and what a
bound drops (node locality, fixed placements, the exact GPU a workload lands on) only
weakens it. The bounds, by name (the JSON's `bounds`):

- `load`: exclusive GPUs whole, plus ceil(max over slots of summed load / capacity);
- `memory`: GPU memory summed, against the largest GPUs' memory;
- `whole_gpu`: exclusive GPUs, plus the most GPU-units that cannot share in one slot
  (load above half the capacity) or at all (memory above half of any GPU they may use);
- `models`: the load and memory bounds per GPU model, over the workloads that may only
  use that model (the models' GPUs are disjoint, so the per-model bounds add up);
- `clique`: workloads that pairwise cannot share a GPU (load, memory or models), one GPU
  per member and per GPU a multi-GPU member occupies; the rest fits in what the clique's
  GPUs leave (each of a member's GPUs leaves its own room) or in extra GPUs;
- `lp` (`bounds_lp`): the clique bound with the rest placed by a linear programme.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from gsched.scheduler.packing.problem import SCALE, PackProblem

#: seconds per element of numpy conflict tests (K x K x T), for the clique's time box
CLIQUE_ELEM_SECONDS = 2e-9
BOUND_NAMES = ("load", "memory", "whole_gpu", "models", "clique", "lp")


@dataclass
class Bounds:
    """Every bound (None when its time box cut it), the best and the one that binds."""

    values: dict[str, int | None]
    cut: dict[str, str] = field(default_factory=dict)  # name -> why it was cut/limited
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def best(self) -> int:
        return max((v for v in self.values.values() if v is not None), default=0)

    @property
    def binding(self) -> str:
        """The first bound (in `BOUND_NAMES` order: cheapest first) reaching the best."""
        return next(k for k in BOUND_NAMES if self.values.get(k) == self.best)


def floor_units(prob: PackProblem) -> np.ndarray:
    """(W, T) loads in 1/1000 GPU rounded down: the bounds' view of a workload."""
    return np.floor(prob.load * SCALE + 1e-6).astype(np.int64)


def type_table(prob: PackProblem) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """GPU types (model, memory): (W, K) allowed types per workload, (K,) type memory,
    (K,) type model index. Few types, so pairwise tests over types are cheap."""
    keys = sorted({(prob.gpu_model[g], int(prob.gpu_mem[g])) for g in range(prob.n_gpus)})
    tmem = np.array([m for _, m in keys], dtype=np.int64)
    models = sorted({k for k, _ in keys})
    tmodel = np.array([models.index(k) for k, _ in keys], dtype=np.int64)
    gtype = np.array([keys.index((prob.gpu_model[g], int(prob.gpu_mem[g])))
                      for g in range(prob.n_gpus)], dtype=np.int64)
    allowed = np.zeros((prob.n_items, len(keys)), dtype=bool)
    rows: dict[tuple, np.ndarray] = {}
    for i in range(prob.n_items):
        key = (int(prob.mem[i]), prob.models[i])
        if key not in rows:
            rows[key] = np.isin(np.arange(len(keys)), gtype[prob.allowed(i)])
        allowed[i] = rows[key]
    return allowed, tmem, tmodel


def load_lower_bound(prob: PackProblem, items: Iterable[int] | None = None,
                     lo: np.ndarray | None = None) -> int:
    """ceil(max over slots of summed load / usable capacity); exclusive GPUs added whole."""
    idx = np.arange(prob.n_items) if items is None else np.fromiter(items, dtype=np.int64)
    if len(idx) == 0:
        return 0
    lo = floor_units(prob) if lo is None else lo
    excl = prob.exclusive[idx]
    whole = int((prob.num_gpu[idx] * excl).sum())
    shared = idx[~excl]
    if len(shared) == 0:
        return whole
    tot = (lo[shared] * prob.num_gpu[shared, None]).sum(axis=0)
    return whole + max(0, int(math.ceil(tot.max() / prob.cap - 1e-9)))


def _gpus_for_memory(total: int, mems: np.ndarray) -> int:
    """Fewest of the GPUs `mems` whose memory adds up to `total` (largest first)."""
    if total <= 0:
        return 0
    cs = np.cumsum(np.sort(mems)[::-1])
    return int(np.searchsorted(cs, total, side="left")) + 1 if cs[-1] >= total else len(mems)


def memory_lower_bound(prob: PackProblem, items: np.ndarray | None = None,
                       gpus: np.ndarray | None = None) -> int:
    """GPUs whose memory holds everyone's; exclusive GPUs hold nothing else."""
    idx = np.arange(prob.n_items) if items is None else items
    mems = prob.gpu_mem if gpus is None else prob.gpu_mem[gpus]
    if len(idx) == 0 or len(mems) == 0:
        return 0
    need = prob.mem[idx] * prob.num_gpu[idx]
    excl = prob.exclusive[idx]
    e = int(prob.num_gpu[idx][excl].sum())
    return max(_gpus_for_memory(int(need.sum()), mems),
               e + _gpus_for_memory(int(need[~excl].sum()), mems))


def whole_gpu_lower_bound(prob: PackProblem, lo: np.ndarray, item_mem_cap: np.ndarray) -> int:
    """Exclusive GPUs + the most GPU-units that pairwise cannot share a GPU, either in one
    slot (each above half the capacity) or by memory (each above half of every GPU it may
    use)."""
    if prob.n_items == 0:
        return 0
    excl = prob.exclusive
    k = prob.num_gpu
    by_slot = int(((2 * lo[~excl] > prob.cap) * k[~excl, None]).sum(axis=0).max(initial=0))
    by_mem = int((k * (~excl & (2 * prob.mem > item_mem_cap))).sum())
    return int((k * excl).sum()) + max(by_slot, by_mem)


def models_lower_bound(prob: PackProblem, lo: np.ndarray) -> int:
    """Sum over GPU models of the load/memory bound of the workloads bound to that model."""
    if prob.n_items == 0:
        return 0
    total = 0
    gm = np.array(prob.gpu_model)
    for m in sorted(set(prob.gpu_model)):
        on_m = gm == m
        only = np.array([not prob.allowed(i)[~on_m].any() for i in range(prob.n_items)])
        idx = np.flatnonzero(only)
        if len(idx):
            total += max(load_lower_bound(prob, idx, lo),
                         memory_lower_bound(prob, idx, np.flatnonzero(on_m)))
    return total


def item_mem_cap(prob: PackProblem, allowed: np.ndarray, tmem: np.ndarray) -> np.ndarray:
    """(W,) the most GPU memory any GPU a workload may use has."""
    return (allowed * tmem[None, :]).max(axis=1, initial=0)


@dataclass
class ConflictClasses:
    """Workloads alike for conflicts (load, memory, allowed GPU types) and who conflicts."""

    rep: np.ndarray        # (K,) representative workload
    members: list[np.ndarray]
    selfc: np.ndarray      # (K,) members conflict with each other
    conf: np.ndarray       # (K, K) classes conflict
    truncated: int         # candidate classes dropped by the time box


def conflict_classes(prob: PackProblem, lo: np.ndarray, allowed: np.ndarray, tmem: np.ndarray,
                     idx: np.ndarray, max_classes: int) -> ConflictClasses:
    """Group `idx` into classes and test every pair of classes for a conflict."""
    key = np.concatenate((lo[idx], prob.mem[idx, None], prob.num_gpu[idx, None],
                          allowed[idx].astype(np.int64)), axis=1)
    _, first, inv = np.unique(key, axis=0, return_index=True, return_inverse=True)
    inv = inv.ravel()
    rep = idx[first]
    cap_mem = np.maximum(item_mem_cap(prob, allowed, tmem)[rep], 1)
    size = np.maximum(lo[rep].max(axis=1) / prob.cap, prob.mem[rep] / cap_mem)
    keep = np.argsort(-size, kind="stable")[:max_classes]
    truncated = len(rep) - len(keep)
    rep = rep[keep]
    members = [idx[inv == k] for k in keep]
    a = allowed[rep]
    common_mem = np.zeros((len(rep), len(rep)), dtype=np.int64)
    for t in range(len(tmem)):
        common_mem = np.maximum(common_mem, np.outer(a[:, t], a[:, t]) * tmem[t])
    common = (a.astype(np.int64) @ a.T.astype(np.int64)) > 0
    m = prob.mem[rep]
    conf = ~common | (m[:, None] + m[None, :] > common_mem)
    step = max(1, 2_000_000 // max(1, len(rep) * prob.slots))
    u = lo[rep]
    for s in range(0, len(rep), step):
        conf[s:s + step] |= (u[s:s + step, None, :] + u[None, :, :] > prob.cap).any(axis=2)
    selfc = np.diag(conf).copy()
    np.fill_diagonal(conf, False)
    return ConflictClasses(rep, members, selfc, conf, truncated)


def greedy_cliques(prob: PackProblem, cc: ConflictClasses) -> list[list[int]]:
    """Large sets of pairwise-conflicting workloads, one per greedy order over classes.

    A class whose members conflict with each other is taken whole, else one member.
    Orders: conflict degree, degree weighted by GPUs, daily load, peak."""
    if len(cc.rep) == 0:
        return [[]]
    take = np.array([len(m) if s else 1 for m, s in zip(cc.members, cc.selfc, strict=True)])
    weight = take * prob.num_gpu[cc.rep]
    u = prob.load[cc.rep]
    out: list[list[int]] = []
    for key in (cc.conf.sum(axis=1), cc.conf @ weight + weight, u.sum(axis=1), u.max(axis=1)):
        ok = np.ones(len(cc.rep), dtype=bool)
        clique: list[int] = []
        for k in np.argsort(-key, kind="stable"):
            if ok[k]:
                clique.extend(int(i) for i in cc.members[k][: take[k]])
                ok &= cc.conf[k]
        if sorted(clique) not in out:
            out.append(sorted(clique))
    return out


def clique_bound_of(prob: PackProblem, clique: Sequence[int], lo: np.ndarray,
                    mem_cap: np.ndarray) -> int:
    """Exclusive GPUs + the clique's GPUs + the extra GPUs the rest needs beyond the room
    the clique's GPUs leave (per slot and in memory). A k-GPU member leaves its room on
    each of its k GPUs."""
    excl = prob.exclusive
    whole = int((prob.num_gpu * excl).sum())
    clique = np.asarray(clique, dtype=np.int64)
    if len(clique) == 0:
        return whole
    k = prob.num_gpu
    rest = np.setdiff1d(np.flatnonzero(~excl), clique)
    rest_load = (lo[rest] * k[rest, None]).sum(axis=0)
    slack = ((prob.cap - lo[clique]) * k[clique, None]).sum(axis=0)
    by_load = int(math.ceil((rest_load - slack).max() / prob.cap - 1e-9))
    rest_mem = int((prob.mem[rest] * k[rest]).sum())
    mem_slack = int(((mem_cap[clique] - prob.mem[clique]) * k[clique]).sum())
    top = int(prob.gpu_mem.max(initial=0))
    by_mem = int(math.ceil((rest_mem - mem_slack) / top)) if top else 0
    return whole + int(k[clique].sum()) + max(0, by_load, by_mem)


def conflict_lower_bound(prob: PackProblem, clique: Sequence[int] | None = None) -> int:
    """The clique bound for `clique`, or the best over the greedy cliques."""
    if prob.n_items == 0:
        return 0
    lo = floor_units(prob)
    allowed, tmem, _ = type_table(prob)
    cap = item_mem_cap(prob, allowed, tmem)
    if clique is not None:
        return clique_bound_of(prob, clique, lo, cap)
    cc = conflict_classes(prob, lo, allowed, tmem, np.flatnonzero(~prob.exclusive), 4_000)
    return max(clique_bound_of(prob, c, lo, cap) for c in greedy_cliques(prob, cc))


def compute_bounds(prob: PackProblem, seconds: float = math.inf,
                   deadline: float | None = None, lp_dtime_per_second: float = 1.0) -> Bounds:
    """Every bound, the expensive ones within `seconds` (deterministic estimates decide
    what runs and how large, so a quiet machine always gives the same bounds) and never
    past the wall-clock `deadline` (perf_counter; a guard)."""
    from gsched.scheduler.packing.bounds_lp import lp_bound

    t0 = time.perf_counter()
    b = Bounds(values={})
    if prob.n_items == 0:
        b.values = dict.fromkeys(BOUND_NAMES, 0)
        return b
    lo = floor_units(prob)
    allowed, tmem, _ = type_table(prob)
    mcap = item_mem_cap(prob, allowed, tmem)
    b.values["load"] = load_lower_bound(prob, lo=lo)
    b.values["memory"] = memory_lower_bound(prob)
    b.values["whole_gpu"] = whole_gpu_lower_bound(prob, lo, mcap)
    b.values["models"] = models_lower_bound(prob, lo)
    b.seconds["simple"] = time.perf_counter() - t0
    # Clique: as many classes as a third of the box affords for the K x K x T tests.
    t1 = time.perf_counter()
    max_classes = int(math.sqrt(max(seconds, 0.0) / 3 / CLIQUE_ELEM_SECONDS / prob.slots)) \
        if math.isfinite(seconds) else 4_000
    max_classes = min(max_classes, 4_000)
    shared = np.flatnonzero(~prob.exclusive)
    cliques: list[list[int]] = [[]]
    if max_classes < 2 or (deadline is not None and time.perf_counter() > deadline):
        b.values["clique"] = None
        b.cut["clique"] = "no time left in the bounds' budget"
    else:
        cc = conflict_classes(prob, lo, allowed, tmem, shared, max_classes)
        cliques = greedy_cliques(prob, cc)
        conf = [clique_bound_of(prob, c, lo, mcap) for c in cliques]
        b.values["clique"] = max(conf)
        cliques = [cliques[k] for k in sorted({0, int(np.argmax(conf))})]
        if cc.truncated:
            b.cut["clique"] = f"limited to the {len(cc.rep):,} largest of " \
                              f"{len(cc.rep) + cc.truncated:,} conflict classes"
    b.seconds["clique"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    # what is left for the LP, by estimate (the clique's K x K x T tests), not by clock
    clique_est = CLIQUE_ELEM_SECONDS * prob.slots * min(max_classes, len(shared)) ** 2
    left = max(0.0, seconds - clique_est) if math.isfinite(seconds) else math.inf
    best_lp: int | None = None
    why = ""
    for c in cliques:
        per = left / len(cliques)
        wall = None if deadline is None else deadline - time.perf_counter()
        if wall is not None and wall <= 0.05:
            why = "wall-clock deadline"
            break
        v, why_c = lp_bound(prob, c, lo, allowed, tmem, dtime=per * lp_dtime_per_second,
                            wall=wall)  # the deadline alone guards: see lns.run
        if v is None and deadline is not None and time.perf_counter() >= deadline - 0.05:
            why_c = "wall-clock deadline"
        why = why or why_c
        if v is not None:
            best_lp = max(best_lp or 0, v)
    b.values["lp"] = best_lp
    if best_lp is None:
        b.cut["lp"] = why or "not run"
    elif why:
        b.cut["lp"] = f"one of two LPs cut: {why}"
    b.seconds["lp"] = time.perf_counter() - t2
    return b


def lower_bound(prob: PackProblem) -> int:
    """The best of every bound, with no time box (tests and small instances)."""
    return compute_bounds(prob).best
