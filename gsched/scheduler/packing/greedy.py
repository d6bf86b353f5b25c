"""The greedy start: profile-aware first-fit / best-fit decreasing, vectorised over GPUs.

Its plan is always feasible; the search starts from it and CP-SAT takes it as a hint.
"""

from __future__ import annotations

import numpy as np

from gsched.errors import InputError
from gsched.scheduler.packing.problem import SCALE, PackProblem


class Packing:
    """A mutable assignment with per-GPU residual capacity: the LNS incumbent."""

    def __init__(self, prob: PackProblem) -> None:
        self.prob = prob
        self.resid = np.full((prob.n_gpus, prob.slots), prob.cap, dtype=np.int64)
        self.mem_free = prob.gpu_mem.copy()
        self.count = np.zeros(prob.n_gpus, dtype=np.int64)
        self.where: list[tuple[int, ...] | None] = [None] * prob.n_items
        self.on_gpu: list[set[int]] = [set() for _ in range(prob.n_gpus)]
        self.excl = np.zeros(prob.n_gpus, dtype=bool)  # holds an exclusive workload

    def put(self, i: int, gpus: tuple[int, ...]) -> None:
        g = list(gpus)
        if self.prob.exclusive[i]:
            self.excl[g] = True
        self.resid[g] -= self.prob.units[i]
        self.mem_free[g] -= self.prob.mem[i]
        self.count[g] += 1
        for x in g:
            self.on_gpu[x].add(i)
        self.where[i] = gpus

    def take(self, i: int) -> None:
        gpus = self.where[i]
        assert gpus is not None
        g = list(gpus)
        if self.prob.exclusive[i]:
            self.excl[g] = False
        self.resid[g] += self.prob.units[i]
        self.mem_free[g] += self.prob.mem[i]
        self.count[g] -= 1
        for x in g:
            self.on_gpu[x].discard(i)
        self.where[i] = None

    def used(self) -> np.ndarray:
        return self.count > 0

    def cost(self) -> float:
        return float(self.prob.gpu_price[self.used()].sum())

    def moves(self) -> int:
        return sum(1 for i, cur in self.prob.current.items() if self.where[i] != cur)


def gpu_order(prob: PackProblem) -> np.ndarray:
    """Rank of each GPU when opening new ones: cheapest first, then cluster order."""
    order = np.lexsort((np.arange(prob.n_gpus), prob.gpu_price))
    rank = np.empty(prob.n_gpus, dtype=np.int64)
    rank[order] = np.arange(prob.n_gpus)
    return rank


def greedy(prob: PackProblem, rule: str = "best", keep_current: bool = True,
           peak_only: bool = False) -> Packing:
    """Profile-aware first-fit (`rule="first"`) or best-fit (`"best"`) decreasing.

    Fixed workloads go first where they are; then (if `keep_current`) workloads with a
    current placement stay there when it still fits; the rest are placed most
    constrained and largest first (GPU count, fewest allowed GPUs, peak share plus
    memory share, daily load).
    First fit takes the lowest-ranked GPU that fits in every slot; best fit the fitting
    GPU with the least load left over the day, which is where profiles interleave best.
    `peak_only` books each workload's peak in every slot instead: the peak-reservation
    baseline.
    """
    units = prob.units
    if peak_only:  # one slot holding the peak: the same plan, 1/T of the work
        units = units.max(axis=1, keepdims=True)
        prob = _with_units(prob, units)
    pk = Packing(prob)
    for i, gpus in prob.fixed.items():
        pk.put(i, gpus)
    if keep_current:
        for i, gpus in prob.current.items():
            g = list(gpus)
            if (i not in prob.fixed and prob.allowed(i)[g].all()
                    and (pk.resid[g] >= units[i]).all() and (pk.mem_free[g] >= prob.mem[i]).all()
                    and not (prob.exclusive[i] and pk.count[g].any())
                    and not pk.excl[g].any()):
                pk.put(i, gpus)
    rank = gpu_order(prob)
    todo = [i for i in range(prob.n_items) if pk.where[i] is None]
    for i in todo:
        prob.allowed(i)  # fills the cache read below
    n_allowed = {key: int(a.sum()) for key, a in prob.allowed_cache.items()}
    # most constrained first: GPU count, then fewest allowed GPUs, then largest by peak
    # share plus memory share (vector-packing size: where memory binds it counts too)
    mem_share = prob.mem / max(1, int(prob.gpu_mem.max(initial=1)))
    size = units.max(axis=1, initial=0) / prob.cap + mem_share
    todo.sort(key=lambda i: (-prob.num_gpu[i], n_allowed[(int(prob.mem[i]), prob.models[i])],
                             -float(size[i]), -int(units[i].sum()), i))
    used = pk.used()
    for i in todo:
        gpus = fit_one(prob, pk, i, units[i], rule, rank, used)
        if gpus is None:
            raise InputError(f"workload {prob.ids[i]!r} does not fit: the cluster "
                             f"({prob.n_gpus} GPUs) is full under this headroom", field="cluster")
        pk.put(i, gpus)
        used[list(gpus)] = True
    return pk


def _with_units(prob: PackProblem, units: np.ndarray) -> PackProblem:
    from dataclasses import replace
    return replace(prob, units=units, slots=units.shape[1], load=prob.load[:, :units.shape[1]],
                   allowed_cache=prob.allowed_cache)


def fit_one(prob: PackProblem, pk: Packing, i: int, u: np.ndarray, rule: str,
             rank: np.ndarray, used: np.ndarray,
             allow_empty: bool = True) -> tuple[int, ...] | None:
    allowed = prob.allowed(i)
    k = int(prob.num_gpu[i])
    excl = bool(prob.exclusive[i])
    cand_used = np.flatnonzero(used & allowed) if not excl else np.zeros(0, dtype=np.int64)
    ok_used = cand_used
    if len(cand_used):
        # Cheap necessary tests on the item's peak slot and its highest slots first, the
        # full test on the survivors.
        tp = int(np.argmax(u))
        pre = ((pk.resid[cand_used, tp] >= u[tp]) & (pk.mem_free[cand_used] >= prob.mem[i])
               & ~pk.excl[cand_used])
        cand_used = cand_used[pre]
        if len(cand_used) > 64 and len(u) > 8:  # then its 8 highest slots
            top = np.argpartition(-u, 8)[:8]
            cand_used = cand_used[(pk.resid[np.ix_(cand_used, top)] >= u[top]).all(axis=1)]
        ok = (pk.resid[cand_used] >= u).all(axis=1)
        ok_used = cand_used[ok]
    if k == 1 and len(ok_used):
        if rule == "first":
            return (int(ok_used[np.argmin(rank[ok_used])]),)
        left = (pk.resid[ok_used] - u).sum(axis=1)
        best = np.lexsort((rank[ok_used], left))[0]
        return (int(ok_used[best]),)
    empty = np.flatnonzero(~used & allowed & (pk.count == 0)) if allow_empty else cand_used[:0]
    if k == 1:
        if len(empty):
            return (int(empty[np.argmin(rank[empty])]),)
        return None
    # k GPUs on one node: candidates are fitting used GPUs plus empty ones.
    cand = np.concatenate((ok_used, empty))
    if len(cand) == 0:
        return None
    node_of = prob.gpu_node[cand]
    per_node = np.bincount(node_of, minlength=len(prob.node_names))
    nodes = np.flatnonzero(per_node >= k)
    if len(nodes) == 0:
        return None
    is_used = used[cand]
    lowest = np.full(len(prob.node_names), np.iinfo(np.int64).max)
    np.minimum.at(lowest, node_of, rank[cand])
    node_rank = lowest[nodes]
    if rule == "first":
        node = int(nodes[np.argmin(node_rank)])
    else:  # most already-used GPUs that fit, then lowest rank
        used_per = np.bincount(node_of[is_used], minlength=len(prob.node_names))[nodes]
        node = int(nodes[np.lexsort((node_rank, -np.minimum(used_per, k)))[0]])
    mine = cand[node_of == node]
    order = np.lexsort((rank[mine], ~used[mine]))
    return tuple(sorted(int(g) for g in mine[order][:k]))


def has_exclusive(prob: PackProblem, pk: Packing, gpus: np.ndarray) -> np.ndarray:
    """GPUs holding an exclusive workload (nothing may join it)."""
    return pk.excl[gpus]


def peak_reservation_gpus(prob: PackProblem) -> int:
    """GPUs first-fit decreasing needs when every workload books its peak all day (on a
    cluster widened as far as that takes: a baseline may need more GPUs than there are)."""
    return _widening(prob, lambda p: greedy(p, rule="first", keep_current=False,
                                            peak_only=True))


def _widening(prob: PackProblem, run) -> int:  # noqa: ANN001 - PackProblem -> Packing
    for _ in range(6):
        try:
            return int(run(prob).used().sum())
        except InputError:
            prob = _widened(prob)
    return int(run(prob).used().sum())


def _widened(prob: PackProblem) -> PackProblem:
    """The same problem on twice the nodes (copies named `<node>+`)."""
    from dataclasses import replace

    n, g = len(prob.node_names), prob.n_gpus
    return replace(prob, node_names=prob.node_names + [f"{x}+" for x in prob.node_names],
                   node_first=np.concatenate((prob.node_first, prob.node_first + g)),
                   node_count=np.concatenate((prob.node_count, prob.node_count)),
                   gpu_node=np.concatenate((prob.gpu_node, prob.gpu_node + n)),
                   gpu_local=np.concatenate((prob.gpu_local, prob.gpu_local)),
                   gpu_model=prob.gpu_model * 2, gpu_mem=np.tile(prob.gpu_mem, 2),
                   gpu_price=np.tile(prob.gpu_price, 2), allowed_cache={})


def request_booking_gpus(prob: PackProblem) -> int:
    """GPUs first-fit decreasing needs when every workload books its *request* (a share up
    to a whole GPU, the Kubernetes view: no profile, no headroom) all day."""
    from dataclasses import replace

    req = prob.request if prob.request is not None else prob.load.max(axis=1)
    units = np.ceil(req * SCALE - 1e-6).astype(np.int64)[:, None]  # one slot: all day alike
    booked = replace(prob, units=units, slots=1, load=prob.load[:, :1], cap=SCALE,
                     exclusive=np.zeros(prob.n_items, dtype=bool), fixed={}, current={},
                     allowed_cache=prob.allowed_cache)
    return _widening(booked, lambda p: greedy(p, rule="first", keep_current=False))
