"""The spatial tidal packer: put workloads on GPUs by their load over the day.

Kubernetes books peak requests; this packer books *profiles*. A workload is a per-GPU
daily load profile (T slots), a GPU count (all on one node), GPU memory and optional
allowed GPU models. A plan is feasible when on every GPU and in every slot the summed
load stays under `1 - headroom`, memory fits, multi-GPU workloads share one node and
model constraints hold. The objective is lexicographic: the cheapest set of GPUs (GPU
count when prices are equal), then the fewest moves (when a current placement is
given), then the lowest summed per-GPU peak (spare headroom).

How it scales (see docs/packer.md):
1. `greedy`: profile-aware first-fit / best-fit decreasing, vectorised over GPUs. Its
   plan is always feasible and is the CP-SAT hint.
2. Small instances: one CP-SAT model over every workload (`build_model` / `solve_model`).
3. Large instances: numpy ruin-and-recreate (`ruin_recreate`: free the workloads of a
   few GPUs, re-insert them by "valley" best fit, keep the step when it uses fewer
   GPUs or concentrates load), thousands of cheap steps; then large-neighbourhood
   search with CP-SAT: each step frees the workloads on a few GPUs (a lightly loaded
   "victim" or two, and receivers with room), re-packs just those, and keeps the
   result when it is cheaper. Everything else is background load, so a step costs the
   same at 100 or 10,000 workloads.
4. `check_plan` re-checks any plan from scratch with floats, independent of the model;
   tests assert against it.

Loads enter CP-SAT as integers in 1/1000 of a GPU, rounded *up*, so an integer-feasible
plan is feasible in floats. A workload whose peak exceeds the usable capacity (e.g.
training at 100% utilisation with 10% headroom) is *exclusive*: it books its whole
GPUs, which is what it would get anyway. Fixed workloads (already running, not to be
moved) are background; workloads with a `current` placement count as a move when the
plan puts them elsewhere, and the number of moves is capped by `move_budget`.

Determinism: with `deterministic=True` (default) each CP-SAT call runs one worker under
a deterministic-time limit and the search stops on summed deterministic time and an
iteration cap, so a fixed seed gives the same plan on any machine load. The wall-clock
`time_limit` is then only a guard at three times its value.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from ortools.sat.python import cp_model
from pydantic import BaseModel, ConfigDict, Field

from gsched.errors import InputError
from gsched.models import DEFAULT_SLOTS, Cluster, Job

SCALE = 1000  # load units per GPU
#: CP-SAT deterministic time per wall second on packing models (measured: ~0.64 on the
#: 2-core development machine); converts a wall budget into a deterministic one.
DTIME_PER_SECOND = 0.6
#: deterministic time charged per CP-SAT call at least, for the Python work around it
MIN_STEP_DTIME = 0.02


# ----------------------------------------------------------------------------- inputs
class Workload(BaseModel):
    """One thing to place: per-GPU daily load, GPU count on one node, memory, models."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    id: str
    load: np.ndarray  # (T,) per-GPU load in [0, 1]
    num_gpu: int = Field(default=1, ge=1)
    gpu_mem_mib: int = Field(default=0, ge=0)
    gpu_models: tuple[str, ...] = ()
    fixed: tuple[str, tuple[int, ...]] | None = None
    current: tuple[str, tuple[int, ...]] | None = None

    @classmethod
    def from_job(cls, job: Job, slots: int = DEFAULT_SLOTS, **kw: object) -> Workload:
        return cls(id=job.id, load=job.load_profile(slots), num_gpu=job.num_gpu,
                   gpu_mem_mib=job.gpu_mem_mib, gpu_models=job.gpu_models, **kw)


@dataclass
class PackProblem:
    """Workloads and GPUs as flat numpy arrays (GPUs indexed globally, node by node)."""

    ids: list[str]
    load: np.ndarray        # (W, T) float per-GPU load
    units: np.ndarray       # (W, T) int64: ceil(load * SCALE), or cap if exclusive
    exclusive: np.ndarray   # (W,) bool
    num_gpu: np.ndarray     # (W,)
    mem: np.ndarray         # (W,)
    models: list[tuple[str, ...]]
    fixed: dict[int, tuple[int, ...]]
    current: dict[int, tuple[int, ...]]
    node_names: list[str]
    node_first: np.ndarray  # (N,) first global GPU index of each node
    node_count: np.ndarray  # (N,)
    gpu_node: np.ndarray    # (G,)
    gpu_local: np.ndarray   # (G,)
    gpu_model: list[str]
    gpu_mem: np.ndarray     # (G,)
    gpu_price: np.ndarray   # (G,) per GPU-hour
    cap: int
    headroom: float
    slots: int
    allowed_cache: dict[tuple, np.ndarray] = field(default_factory=dict)

    @property
    def n_items(self) -> int:
        return len(self.ids)

    @property
    def n_gpus(self) -> int:
        return len(self.gpu_node)

    def allowed(self, i: int) -> np.ndarray:
        """(G,) GPUs workload i may use (model and memory), ignoring what else is there."""
        key = (int(self.mem[i]), self.models[i])
        a = self.allowed_cache.get(key)
        if a is None:
            a = self.gpu_mem >= self.mem[i]
            if self.models[i]:
                a &= np.isin(np.array(self.gpu_model), list(self.models[i]))
            self.allowed_cache[key] = a
        return a

    def gpu_of(self, node: str, gpus: Sequence[int]) -> tuple[int, ...]:
        try:
            n = self.node_names.index(node)
        except ValueError:
            raise InputError(f"unknown node {node!r}", field="placement") from None
        if any(g < 0 or g >= self.node_count[n] for g in gpus):
            raise InputError(f"node {node!r} has no GPU {list(gpus)}", field="placement")
        return tuple(int(self.node_first[n] + g) for g in gpus)


def build_problem(workloads: Sequence[Workload], cluster: Cluster, headroom: float = 0.1,
                  slots: int | None = None) -> PackProblem:
    """Flatten workloads and cluster; reject workloads that can never fit (InputError)."""
    if not 0 <= headroom < 1:
        raise InputError(f"headroom must be in [0, 1), got {headroom}", field="headroom")
    if slots is None:
        slots = len(workloads[0].load) if workloads else DEFAULT_SLOTS
    nodes = [n for n in cluster.nodes if n.gpu_count > 0]
    counts = np.array([n.gpu_count for n in nodes], dtype=np.int64)
    first = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
    gpu_node = np.repeat(np.arange(len(nodes)), counts)
    gpu_local = np.arange(int(counts.sum())) - first[gpu_node] if len(nodes) else np.zeros(0, int)
    gpu_model = [nodes[n].gpu_model for n in gpu_node]
    gpu_mem = np.array([nodes[n].gpu_memory_mib for n in gpu_node], dtype=np.int64)
    gpu_price = np.array([cluster.price_of(nodes[n].gpu_model) for n in gpu_node])
    cap = int(math.floor((1.0 - headroom) * SCALE + 1e-9))
    w = len(workloads)
    load = np.zeros((w, slots))
    for i, wl in enumerate(workloads):
        if len(wl.load) != slots:
            raise InputError(f"workload {wl.id!r} has {len(wl.load)} slots, expected {slots}",
                             field="profile")
        load[i] = wl.load
    if w and (not np.isfinite(load).all() or load.min() < 0 or load.max() > 1):
        bad = workloads[int(np.argmax(~np.isfinite(load).all(axis=1) | (load.min(axis=1) < 0)
                                      | (load.max(axis=1) > 1)))].id
        raise InputError(f"workload {bad!r}: load must be between 0 and 1", field="profile")
    units = np.ceil(load * SCALE - 1e-6).astype(np.int64)
    exclusive = units.max(axis=1, initial=0) > cap
    units[exclusive] = cap
    prob = PackProblem(
        ids=[wl.id for wl in workloads], load=load, units=units, exclusive=exclusive,
        num_gpu=np.array([wl.num_gpu for wl in workloads], dtype=np.int64),
        mem=np.array([wl.gpu_mem_mib for wl in workloads], dtype=np.int64),
        models=[wl.gpu_models for wl in workloads], fixed={}, current={},
        node_names=[n.name for n in nodes], node_first=first, node_count=counts,
        gpu_node=gpu_node, gpu_local=gpu_local, gpu_model=gpu_model, gpu_mem=gpu_mem,
        gpu_price=gpu_price, cap=cap, headroom=headroom, slots=slots)
    if len(set(prob.ids)) != w:
        dup = next(x for x in prob.ids if prob.ids.count(x) > 1)
        raise InputError(f"duplicate workload id {dup!r}", field="id")
    max_node = int(counts.max(initial=0))
    for i, wl in enumerate(workloads):
        _check_can_fit(prob, i, wl, max_node)
        for attr, target in (("fixed", prob.fixed), ("current", prob.current)):
            where = getattr(wl, attr)
            if where is not None:
                gpus = prob.gpu_of(where[0], where[1])
                if len(gpus) != wl.num_gpu or len(set(gpus)) != len(gpus):
                    raise InputError(f"workload {wl.id!r}: {attr} placement needs "
                                     f"{wl.num_gpu} distinct GPU(s)", field=attr)
                target[i] = gpus
    return prob


def _check_can_fit(prob: PackProblem, i: int, wl: Workload, max_node: int) -> None:
    """Infeasible input is a user error that names the workload and why."""
    if prob.n_gpus == 0:
        raise InputError("the cluster has no GPUs", field="cluster")
    if wl.num_gpu > max_node:
        raise InputError(f"workload {wl.id!r} needs {wl.num_gpu} GPUs on one node; the "
                         f"largest node has {max_node}", field="num_gpu")
    if wl.gpu_models and not set(wl.gpu_models) & set(prob.gpu_model):
        raise InputError(f"workload {wl.id!r} needs GPU model {'|'.join(wl.gpu_models)}, "
                         f"which no node has", field="gpu_model")
    ok = prob.allowed(i)
    if not ok.any():
        raise InputError(f"workload {wl.id!r} needs {wl.gpu_mem_mib} MiB of GPU memory; the "
                         f"largest allowed GPU has {int(prob.gpu_mem.max())} MiB",
                         field="gpu_mem_mib")
    per_node = np.bincount(prob.gpu_node[ok], minlength=len(prob.node_names))
    if per_node.max() < wl.num_gpu:
        raise InputError(f"workload {wl.id!r} needs {wl.num_gpu} suitable GPUs on one node; "
                         f"no node has that many", field="num_gpu")


# ----------------------------------------------------------------------------- output
class Assignment(BaseModel):
    workload: str
    node: str
    gpus: list[int]


class GpuUsage(BaseModel):
    node: str
    gpu: int
    workloads: int
    peak: float
    peak_slot: int


class PackPlan(BaseModel):
    """A packing and how good it is (`gap` is against `lower_bound`).

    `optimal` means the GPU cost is proven minimal (CP-SAT proved it, or it meets the
    lower bound); `status` says how the plan was found (`optimal`, `cost_optimal`:
    cost proven but not the summed peak, `feasible`, `lns`, `greedy`).
    """

    assignments: list[Assignment]
    gpus_used: int
    cost_per_hour: float
    summed_peak: float
    lower_bound: int
    load_lower_bound: int
    gap: float
    status: str
    optimal: bool
    peak_reservation_gpus: int
    profile_ffd_gpus: int
    greedy_gpus: int
    solve_seconds: float
    slots: int
    headroom: float
    moves: int
    move_budget: int | None
    exclusive_workloads: int
    lns_iterations: int
    lns_improvements: int
    seed: int


# ----------------------------------------------------------------------------- bounds
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


# ----------------------------------------------------------------------------- greedy
class _Packing:
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


def _gpu_order(prob: PackProblem) -> np.ndarray:
    """Rank of each GPU when opening new ones: cheapest first, then cluster order."""
    order = np.lexsort((np.arange(prob.n_gpus), prob.gpu_price))
    rank = np.empty(prob.n_gpus, dtype=np.int64)
    rank[order] = np.arange(prob.n_gpus)
    return rank


def greedy(prob: PackProblem, rule: str = "best", keep_current: bool = True,
           peak_only: bool = False) -> _Packing:
    """Profile-aware first-fit (`rule="first"`) or best-fit (`"best"`) decreasing.

    Fixed workloads go first where they are; then (if `keep_current`) workloads with a
    current placement stay there when it still fits; the rest are placed largest first
    (GPU count, then peak, then daily load). First fit takes the lowest-ranked GPU that
    fits in every slot; best fit the fitting GPU with the least load left over the day,
    which is where profiles interleave best. `peak_only` books each workload's peak in
    every slot instead: the peak-reservation baseline.
    """
    units = prob.units
    if peak_only:
        units = np.repeat(units.max(axis=1, keepdims=True), prob.slots, axis=1)
        prob = _with_units(prob, units)
    pk = _Packing(prob)
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
    rank = _gpu_order(prob)
    todo = [i for i in range(prob.n_items) if pk.where[i] is None]
    todo.sort(key=lambda i: (-prob.num_gpu[i], -int(units[i].max()), -int(units[i].sum()), i))
    used = pk.used()
    for i in todo:
        gpus = _fit_one(prob, pk, i, units[i], rule, rank, used)
        if gpus is None:
            raise InputError(f"workload {prob.ids[i]!r} does not fit: the cluster "
                             f"({prob.n_gpus} GPUs) is full under this headroom", field="cluster")
        pk.put(i, gpus)
        used[list(gpus)] = True
    return pk


def _with_units(prob: PackProblem, units: np.ndarray) -> PackProblem:
    from dataclasses import replace
    return replace(prob, units=units, allowed_cache=prob.allowed_cache)


def _fit_one(prob: PackProblem, pk: _Packing, i: int, u: np.ndarray, rule: str,
             rank: np.ndarray, used: np.ndarray,
             allow_empty: bool = True) -> tuple[int, ...] | None:
    allowed = prob.allowed(i)
    k = int(prob.num_gpu[i])
    excl = bool(prob.exclusive[i])
    cand_used = np.flatnonzero(used & allowed) if not excl else np.zeros(0, dtype=np.int64)
    ok_used = cand_used
    if len(cand_used):
        # Cheap necessary test on the item's peak slot first, full test on survivors.
        tp = int(np.argmax(u))
        pre = ((pk.resid[cand_used, tp] >= u[tp]) & (pk.mem_free[cand_used] >= prob.mem[i])
               & ~pk.excl[cand_used])
        cand_used = cand_used[pre]
        ok = (pk.resid[cand_used] >= u).all(axis=1)
        ok_used = cand_used[ok]
    empty = np.flatnonzero(~used & allowed & (pk.count == 0)) if allow_empty else cand_used[:0]
    if k == 1:
        if len(ok_used):
            if rule == "first":
                return (int(ok_used[np.argmin(rank[ok_used])]),)
            left = (pk.resid[ok_used] - u).sum(axis=1)
            best = np.lexsort((rank[ok_used], left))[0]
            return (int(ok_used[best]),)
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
    if rule == "first":
        node_rank = np.array([rank[cand[node_of == n]].min() for n in nodes])
        node = int(nodes[np.argmin(node_rank)])
    else:  # most already-used GPUs that fit, then lowest rank
        used_per = np.bincount(node_of[is_used], minlength=len(prob.node_names))[nodes]
        node_rank = np.array([rank[cand[node_of == n]].min() for n in nodes])
        node = int(nodes[np.lexsort((node_rank, -np.minimum(used_per, k)))[0]])
    mine = cand[node_of == node]
    order = np.lexsort((rank[mine], ~used[mine]))
    return tuple(sorted(int(g) for g in mine[order][:k]))


def _has_exclusive(prob: PackProblem, pk: _Packing, gpus: np.ndarray) -> np.ndarray:
    """GPUs holding an exclusive workload (nothing may join it)."""
    return pk.excl[gpus]


def peak_reservation_gpus(prob: PackProblem) -> int:
    """GPUs first-fit decreasing needs when every workload books its peak all day."""
    return int(greedy(prob, rule="first", keep_current=False, peak_only=True).used().sum())


# ----------------------------------------------------------------------------- CP-SAT
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
                workers: int = 1, deterministic_time: float | None = None) -> SubResult:
    """Solve; returns the assignment for optimal or feasible, None for infeasible/unknown."""
    s = cp_model.CpSolver()
    s.parameters.max_time_in_seconds = max(time_limit, 0.01)
    if deterministic_time is not None:
        # The deterministic limit must be the one that binds; wall time is a far guard.
        s.parameters.max_deterministic_time = max(deterministic_time, 0.01)
        s.parameters.max_time_in_seconds = max(10 * time_limit, 5.0)
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


# ----------------------------------------------------------------------------- checker
def check_plan(prob: PackProblem, assignment: dict[str, tuple[str, Sequence[int]]],
               tol: float = 1e-9) -> list[str]:
    """Every violation of `assignment` (workload -> (node, gpus)), checked with floats.

    Independent of the CP-SAT model and of the integer rounding: it re-adds the float
    profiles per GPU and compares against 1 - headroom in every slot.
    """
    errs: list[str] = []
    usable = 1.0 - prob.headroom
    load = np.zeros((prob.n_gpus, prob.slots))
    mem = np.zeros(prob.n_gpus)
    count = np.zeros(prob.n_gpus, dtype=np.int64)
    excl = np.zeros(prob.n_gpus, dtype=bool)
    names = {n: k for k, n in enumerate(prob.node_names)}
    for i, wid in enumerate(prob.ids):
        if wid not in assignment:
            errs.append(f"{wid}: not placed")
            continue
        node, gl = assignment[wid]
        if node not in names:
            errs.append(f"{wid}: unknown node {node}")
            continue
        n = names[node]
        gl = list(gl)
        if len(gl) != prob.num_gpu[i] or len(set(gl)) != len(gl):
            errs.append(f"{wid}: needs {prob.num_gpu[i]} distinct GPUs, got {gl}")
            continue
        if any(g < 0 or g >= prob.node_count[n] for g in gl):
            errs.append(f"{wid}: node {node} has no GPU {gl}")
            continue
        gg = [int(prob.node_first[n] + g) for g in gl]
        if prob.models[i] and any(prob.gpu_model[g] not in prob.models[i] for g in gg):
            errs.append(f"{wid}: GPU model not allowed")
        if i in prob.fixed and tuple(gg) != tuple(prob.fixed[i]):
            errs.append(f"{wid}: fixed placement moved")
        load[gg] += prob.load[i]
        mem[gg] += prob.mem[i]
        count[gg] += 1
        excl[gg] |= bool(prob.exclusive[i])
    for wid in assignment:
        if wid not in set(prob.ids):
            errs.append(f"{wid}: unknown workload")
    over = (load > usable + tol) & ~(excl & (count == 1))[:, None]
    for g in np.flatnonzero(over.any(axis=1)):
        t = int(np.argmax(load[g]))
        errs.append(f"{prob.node_names[prob.gpu_node[g]]}/gpu{prob.gpu_local[g]}: load "
                    f"{load[g, t]:.4f} > {usable:.4f} in slot {t}")
    for g in np.flatnonzero(mem > prob.gpu_mem + tol):
        errs.append(f"{prob.node_names[prob.gpu_node[g]]}/gpu{prob.gpu_local[g]}: memory "
                    f"{mem[g]:.0f} > {prob.gpu_mem[g]}")
    for g in np.flatnonzero(excl & (count > 1)):
        errs.append(f"{prob.node_names[prob.gpu_node[g]]}/gpu{prob.gpu_local[g]}: exclusive "
                    f"workload shares its GPU")
    return errs


def count_moves(prob: PackProblem, assignment: dict[str, tuple[str, Sequence[int]]]) -> int:
    """Workloads with a current placement that the plan puts elsewhere."""
    moves = 0
    for i, cur in prob.current.items():
        node, gl = assignment[prob.ids[i]]
        if tuple(sorted(prob.gpu_of(node, gl))) != tuple(sorted(cur)):
            moves += 1
    return moves


def gpu_usage(prob: PackProblem, assignment: dict[str, tuple[str, Sequence[int]]]
              ) -> list[GpuUsage]:
    """Per used GPU: how many workloads, its peak summed load and the slot of the peak."""
    load = np.zeros((prob.n_gpus, prob.slots))
    count = np.zeros(prob.n_gpus, dtype=np.int64)
    names = {n: k for k, n in enumerate(prob.node_names)}
    for i, wid in enumerate(prob.ids):
        node, gl = assignment[wid]
        gg = [int(prob.node_first[names[node]] + g) for g in gl]
        load[gg] += prob.load[i]
        count[gg] += 1
    out = []
    for g in np.flatnonzero(count):
        t = int(np.argmax(load[g]))
        out.append(GpuUsage(node=prob.node_names[prob.gpu_node[g]], gpu=int(prob.gpu_local[g]),
                            workloads=int(count[g]), peak=float(load[g, t]), peak_slot=t))
    return out


# ----------------------------------------------------------------------------- search
@dataclass
class _Budget:
    time_limit: float
    deterministic: bool
    max_iterations: int
    start: float = field(default_factory=time.perf_counter)
    dtime: float = 0.0
    iterations: int = 0

    def left(self) -> float:
        """Seconds (wall, or deterministic-time converted) still available."""
        wall_left = (self.time_limit * (3.0 if self.deterministic else 1.0)
                     - (time.perf_counter() - self.start))
        if self.deterministic:
            return min(self.time_limit - self.dtime / DTIME_PER_SECOND, wall_left)
        return wall_left

    def done(self) -> bool:
        return self.iterations >= self.max_iterations or self.left() <= 0.005


def _region_key(prob: PackProblem, pk: _Packing, gpus: Sequence[int],
                items: Iterable[int]) -> tuple[float, int, int]:
    """Lexicographic quality of a region: (GPU cost, moves, summed peak units)."""
    g = np.asarray(list(gpus), dtype=np.int64)
    used = pk.count[g] > 0
    cost = float(prob.gpu_price[g][used].sum())
    peak = int((prob.cap - pk.resid[g][used].min(axis=1)).sum()) if used.any() else 0
    moves = sum(1 for i in items if i in prob.current and pk.where[i] != prob.current[i])
    return round(cost, 6), moves, peak


def _solve_region(prob: PackProblem, pk: _Packing, gpus: list[int], budget: _Budget,
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
    bg_excl = _has_exclusive(prob, pk, garr)
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
        limit = min(sub_limit * share, max(budget.left(), 0.01))
        r = solve_model(model, prob, limit, seed, workers,
                        deterministic_time=limit * DTIME_PER_SECOND if budget.deterministic
                        else None)
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


def _neighbourhood(prob: PackProblem, pk: _Packing, rng: np.random.Generator,
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


def _swap_compatibility(prob: PackProblem, pk: _Packing, victims: list[int],
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


def eject(prob: PackProblem, pk: _Packing, budget: _Budget,
          move_budget: int | None = None, passes: int = 1_000,
          only: Sequence[int] | None = None, share: float = 1.0) -> int:
    """Numpy local search before CP-SAT: empty lightly filled GPUs by best-fit
    re-insertion of their workloads into the other used GPUs; undo when one does not fit.

    Deterministic and cheap (a vector test per workload), it harvests the easy gains
    greedy leaves behind: GPUs opened early whose work now fits in later GPUs' valleys.
    `only` limits the victims to those GPUs (after an LNS re-pack), `share` to the least
    filled fraction of them. Returns the number of GPUs emptied.
    """
    rank = _gpu_order(prob)
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
            for i in items:
                gpus = _fit_one(prob, pk, i, prob.units[i], "best", rank, used,
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


#: deterministic time charged per ruin-and-recreate step, and per fit-test element
#: (calibrated so a deterministic run takes about its wall-clock budget)
RR_STEP_DTIME = 1e-4
RR_ELEM_DTIME = 7e-10
#: above this many GPUs in use, a random sample of them receives in a step (cheaper
#: steps beat a fleet-wide best fit at 10,000 workloads)
RR_RECEIVERS = 600


def ruin_recreate(prob: PackProblem, pk: _Packing, budget: _Budget, rng: np.random.Generator,
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
    rank = _gpu_order(prob)
    stop = budget.iterations + max_iterations if max_iterations is not None else None
    emptied = 0

    while (not budget.done() and budget.left() > reserve and int(pk.count.astype(bool).sum())
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


def pack(workloads: Sequence[Workload], cluster: Cluster, headroom: float = 0.1,
         time_limit: float = 10.0, seed: int = 0, workers: int = 1,
         deterministic: bool = True, move_budget: int | None = None,
         max_iterations: int = 100_000, neighbourhood: int = 12,
         full_model_max_vars: int = 3_000, slots: int | None = None,
         sub_limit: float = 0.5, rr_share: float = 0.9) -> PackPlan:
    """Pack `workloads` on `cluster`: greedy start, then CP-SAT (whole or by LNS)."""
    prob = build_problem(workloads, cluster, headroom, slots)
    return pack_problem(prob, time_limit=time_limit, seed=seed, workers=workers,
                        deterministic=deterministic, move_budget=move_budget,
                        max_iterations=max_iterations, neighbourhood=neighbourhood,
                        full_model_max_vars=full_model_max_vars, sub_limit=sub_limit,
                        rr_share=rr_share)[0]


def pack_problem(prob: PackProblem, time_limit: float = 10.0, seed: int = 0, workers: int = 1,
                 deterministic: bool = True, move_budget: int | None = None,
                 max_iterations: int = 100_000, neighbourhood: int = 12,
                 full_model_max_vars: int = 3_000, sub_limit: float = 0.5,
                 rr_share: float = 0.9
                 ) -> tuple[PackPlan, dict[str, tuple[str, list[int]]]]:
    """`pack` on an already built problem; also returns the raw assignment mapping.

    `rr_share` of what is left of the budget after the greedy start (and of the
    iteration cap) goes to numpy ruin-and-recreate, the rest to the CP-SAT LNS."""
    t0 = time.perf_counter()
    budget = _Budget(time_limit, deterministic, max_iterations)
    lb = lower_bound(prob)
    llb = load_lower_bound(prob)
    pr_gpus = peak_reservation_gpus(prob)
    ffd = greedy(prob, rule="first")
    best = greedy(prob, rule="best")
    ffd_gpus = int(ffd.used().sum())
    if (ffd.cost(), ffd_gpus) < (best.cost(), int(best.used().sum())):
        best = ffd
    greedy_gpus = int(best.used().sum())
    if move_budget is not None and best.moves() > move_budget:
        raise InputError(f"the current placement does not fit under this headroom and "
                         f"needs {best.moves()} moves (budget {move_budget})",
                         field="move_budget")
    rng = np.random.default_rng(seed)
    status, optimal, improvements = "greedy", False, 0
    candidates = _full_model_gpus(prob, best)
    n_vars = sum(int(prob.allowed(i)[candidates].sum()) for i in range(prob.n_items)
                 if i not in prob.fixed)
    run_lns = bool(prob.n_items)
    if prob.n_items and n_vars <= full_model_max_vars:
        # Small enough for one model: most of the budget goes to it; LNS gets the rest
        # only if the model did not prove the cost optimal.
        res = _solve_region(prob, best, list(candidates), budget, seed, workers,
                            time_limit * 0.6, move_budget, full=True, phases=True)
        if res is not None:
            status = res.status.lower()
            optimal = res.status in ("OPTIMAL", "COST_OPTIMAL") and (
                len(candidates) == prob.n_gpus or _interchangeable(prob))
            improvements += int(res.assignment is not None)
            run_lns = not optimal
    if run_lns:
        status = "lns" if status == "greedy" else status + "+lns"
        if eject(prob, best, budget, move_budget, share=0.25 if prob.n_items > 2_000 else 1.0):
            improvements += 1
        if ruin_recreate(prob, best, budget, rng, reserve=budget.left() * (1 - rr_share),
                         max_iterations=int(max_iterations * rr_share), target=lb):
            improvements += 1
        while not budget.done() and int(best.used().sum()) > lb:
            victims, receivers = _neighbourhood(prob, best, rng, neighbourhood)
            if not victims or not receivers:
                break
            before = best.cost(), int(best.used().sum())
            reshape = budget.iterations % 2 == 1
            if reshape:
                # Re-pack victims and receivers together for the lowest summed peak:
                # flatter GPUs leave room where the next ejection needs it.
                res = _solve_region(prob, best, sorted(set(receivers) | set(victims)),
                                    budget, seed + budget.iterations, workers, sub_limit,
                                    move_budget)
            else:
                res = _solve_region(prob, best, receivers, budget, seed + budget.iterations,
                                    workers, sub_limit, move_budget, victims=victims,
                                    objective=False)
            if res is None:
                budget.iterations += 1
                continue
            if reshape and res.assignment is not None:
                # a full pass is affordable on small instances; large ones stay local
                region = sorted(set(receivers) | set(victims))
                eject(prob, best, budget, move_budget, passes=1,
                      only=region if prob.n_items > 2_000 else None)
            if (best.cost(), int(best.used().sum())) < before:
                improvements += 1
    used = best.used()
    gpus_used = int(used.sum())
    if gpus_used == lb and not optimal:
        optimal = bool(np.allclose(prob.gpu_price, prob.gpu_price[0])) if prob.n_gpus else True
    assignment = {prob.ids[i]: (prob.node_names[prob.gpu_node[g[0]]],
                                [int(prob.gpu_local[x]) for x in g])
                  for i, g in enumerate(best.where) if g is not None}
    summed_peak = float(sum(u.peak for u in gpu_usage(prob, assignment)))
    plan = PackPlan(
        assignments=[Assignment(workload=w, node=n, gpus=gl) for w, (n, gl) in assignment.items()],
        gpus_used=gpus_used, cost_per_hour=float(prob.gpu_price[used].sum()),
        summed_peak=summed_peak, lower_bound=lb, load_lower_bound=llb,
        gap=(gpus_used - lb) / lb if lb else 0.0, status=status, optimal=optimal,
        peak_reservation_gpus=pr_gpus, profile_ffd_gpus=ffd_gpus, greedy_gpus=greedy_gpus,
        solve_seconds=time.perf_counter() - t0, slots=prob.slots, headroom=prob.headroom,
        moves=best.moves(), move_budget=move_budget,
        exclusive_workloads=int(prob.exclusive.sum()), lns_iterations=budget.iterations,
        lns_improvements=improvements, seed=seed)
    return plan, assignment


def _interchangeable(prob: PackProblem) -> bool:
    """All GPUs alike and every workload single-GPU: any plan can be relabelled onto the
    GPUs greedy used, so a model over just those loses nothing."""
    return (prob.n_gpus > 0 and bool((prob.num_gpu == 1).all()) and not prob.current
            and len(set(prob.gpu_model)) == 1 and bool((prob.gpu_mem == prob.gpu_mem[0]).all())
            and bool(np.allclose(prob.gpu_price, prob.gpu_price[0])))


def _full_model_gpus(prob: PackProblem, pk: _Packing) -> np.ndarray:
    """GPUs a whole-instance model considers: all of a small cluster, else the nodes the
    greedy plan uses plus as many spare nodes (an optimum never needs more GPUs)."""
    if _interchangeable(prob):
        return np.flatnonzero(pk.used())
    if prob.n_gpus <= 64:
        return np.arange(prob.n_gpus)
    used_nodes = np.unique(prob.gpu_node[pk.used()])
    spare = [n for n in np.argsort(prob.gpu_price[prob.node_first], kind="stable")
             if n not in set(used_nodes)][: len(used_nodes)]
    nodes = np.concatenate((used_nodes, np.array(spare, dtype=np.int64)))
    return np.flatnonzero(np.isin(prob.gpu_node, nodes))
