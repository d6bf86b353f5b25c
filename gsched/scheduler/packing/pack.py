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

Budget (see docs/packer.md, "Time limit and determinism"): `time_limit` is the wall
clock of the whole call, and the CLI's `deadline` makes it the whole command's. The
search is stopped by a *deterministic* budget (CP-SAT deterministic time, and a work
count for the numpy steps) sized from `time_limit` so that a run finishes well inside
it on a quiet machine; the wall-clock deadline is a hard guard that cuts whatever runs
when the machine is slower than that. A fixed seed gives byte-identical plans whenever
the guard did not fire (`stopped_by` says which stopped it). `workers > 1` or
`deterministic=False` trade that for speed: wall-clock budgets, several CP-SAT workers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from gsched.errors import InputError
from gsched.models import Cluster
from gsched.scheduler.packing.bounds import Bounds, compute_bounds
from gsched.scheduler.packing.greedy import (
    Packing,
    greedy,
    peak_reservation_gpus,
    request_booking_gpus,
)
from gsched.scheduler.packing.lns import Budget, cpsat_start, eject, neighbourhood, solve_region
from gsched.scheduler.packing.plan import Assignment, PackPlan, gpu_usage
from gsched.scheduler.packing.problem import PackProblem, Workload, build_problem
from gsched.scheduler.packing.ruin import ruin_recreate

#: share of `time_limit` the deterministic budget spends (greedy, bounds and search
#: together, by estimate): the rest is the margin that keeps a run inside the wall clock
#: when the machine is busy, and the time to read input and write output.
DET_SHARE = 0.55
#: share of the deterministic budget the time-boxed bounds (clique, LP) may take
BOUNDS_SHARE = 0.2
#: estimated seconds per workload of the greedy starts and baselines (charged up front)
GREEDY_SECONDS_PER_ITEM = 4e-4
#: GLOP deterministic time per wall second (measured on the 2-core development machine)
LP_DTIME_PER_SECOND = 0.5


@dataclass
class Progress:
    """What the pipeline is doing, for a caller's progress line (read from another
    thread; written only here)."""

    stage: str = "starting"
    incumbent: Packing | None = None
    bound: int | None = None
    budget: Budget | None = None
    on_stage: Callable[[Progress], None] | None = None

    def enter(self, stage: str) -> None:
        self.stage = stage
        if self.on_stage is not None:
            self.on_stage(self)

    def gpus(self) -> int | None:
        return None if self.incumbent is None else int((self.incumbent.count > 0).sum())


def pack(workloads: Sequence[Workload], cluster: Cluster, headroom: float = 0.1,
         time_limit: float = 10.0, seed: int = 0, workers: int = 1,
         deterministic: bool = True, move_budget: int | None = None,
         max_iterations: int = 100_000, neighbourhood_size: int = 12,
         full_model_max_vars: int = 3_000, slots: int | None = None,
         sub_limit: float = 0.5, rr_share: float = 0.9) -> PackPlan:
    """Pack `workloads` on `cluster`: greedy start, bounds, then CP-SAT (whole or LNS)."""
    prob = build_problem(workloads, cluster, headroom, slots)
    return pack_problem(prob, time_limit=time_limit, seed=seed, workers=workers,
                        deterministic=deterministic, move_budget=move_budget,
                        max_iterations=max_iterations, neighbourhood_size=neighbourhood_size,
                        full_model_max_vars=full_model_max_vars, sub_limit=sub_limit,
                        rr_share=rr_share)[0]


def pack_problem(prob: PackProblem, time_limit: float = 10.0, seed: int = 0, workers: int = 1,
                 deterministic: bool = True, move_budget: int | None = None,
                 max_iterations: int = 100_000, neighbourhood_size: int = 12,
                 full_model_max_vars: int = 3_000, sub_limit: float = 0.5,
                 rr_share: float = 0.9, deadline: float | None = None,
                 progress: Progress | None = None, overhead: float = 0.0,
                 ) -> tuple[PackPlan, dict[str, tuple[str, list[int]]]]:
    """`pack` on an already built problem; also returns the raw assignment mapping.

    `deadline` (perf_counter) is the wall-clock guard, by default `time_limit` from now;
    `overhead` the seconds of `time_limit` a caller spends outside (an estimate, so the
    deterministic budget stays a function of the input).
    `rr_share` of the search budget (and of the iteration cap) goes to numpy
    ruin-and-recreate, the rest to the CP-SAT LNS."""
    t0 = time.perf_counter()
    deadline = t0 + time_limit if deadline is None else deadline
    deterministic = deterministic and workers == 1
    progress = progress or Progress()
    det_total = max(0.0, time_limit - overhead) * DET_SHARE
    greedy_est = GREEDY_SECONDS_PER_ITEM * prob.n_items
    bounds_box = max(0.0, (det_total - greedy_est) * BOUNDS_SHARE)
    search_det = max(0.05, det_total - greedy_est - bounds_box)

    progress.enter("greedy start")
    ffd, best = _try_greedy(prob, "first"), _try_greedy(prob, "best")
    if ffd is None and best is None:
        best = cpsat_start(prob, full_model_max_vars, min(time_limit * 0.2, 5.0), seed)
        if best is None:
            greedy(prob, rule="best")  # raises the error that names the workload
    ffd_gpus = int(ffd.used().sum()) if ffd is not None else peak_reservation_gpus(prob)
    if best is None or (ffd is not None and (ffd.cost(), ffd_gpus)
                        < (best.cost(), int(best.used().sum()))):
        best = ffd
    assert best is not None
    progress.incumbent = best
    greedy_gpus = int(best.used().sum())
    if move_budget is not None and best.moves() > move_budget:
        raise InputError(f"the current placement does not fit under this headroom and "
                         f"needs {best.moves()} moves (budget {move_budget})",
                         field="move_budget")
    pr_gpus = peak_reservation_gpus(prob)
    rb_gpus = request_booking_gpus(prob)

    progress.enter("lower bounds")
    bounds = compute_bounds(prob, bounds_box if deterministic else
                            max(0.0, (deadline - time.perf_counter()) * BOUNDS_SHARE),
                            deadline=deadline, lp_dtime_per_second=LP_DTIME_PER_SECOND)
    lb = bounds.best
    progress.bound = lb
    guard_cut = any("wall-clock deadline" in why for why in bounds.cut.values())

    progress.enter("search")
    budget = Budget(search_det if deterministic else max(0.0, deadline - time.perf_counter()),
                    deterministic, max_iterations, deadline=deadline)
    progress.budget = budget
    status, optimal, improvements = _search(prob, best, budget, lb, seed, workers, move_budget,
                                            neighbourhood_size, full_model_max_vars,
                                            sub_limit, rr_share, max_iterations)
    if guard_cut:  # the bounds depend on the clock: say so, whatever stopped the search
        budget.stopped_by = "wall-clock deadline"
    if not budget.stopped_by:
        budget.stopped_by = "lower bound reached" if int(best.used().sum()) <= lb else (
            "proven optimal" if optimal else "search exhausted")
    progress.enter("writing the plan")
    plan, assignment = _plan(prob, best, bounds, status, optimal, improvements, budget,
                             seed=seed, move_budget=move_budget, pr_gpus=pr_gpus,
                             rb_gpus=rb_gpus, ffd_gpus=ffd_gpus, greedy_gpus=greedy_gpus,
                             time_limit=time_limit, wall=time.perf_counter() - t0)
    return plan, assignment


def _try_greedy(prob: PackProblem, rule: str) -> Packing | None:
    """A greedy start, or None when this rule leaves a workload nowhere to go (a full
    cluster: the other rule may still fit everything)."""
    try:
        return greedy(prob, rule=rule)
    except InputError:
        return None


def _search(prob: PackProblem, best: Packing, budget: Budget, lb: int, seed: int,
            workers: int, move_budget: int | None, size: int, full_model_max_vars: int,
            sub_limit: float, rr_share: float, max_iterations: int) -> tuple[str, bool, int]:
    """Improve `best` in place: one CP-SAT model when small, else eject, ruin-and-recreate
    and CP-SAT LNS. Returns (status, proven optimal, improvements)."""
    rng = np.random.default_rng(seed)
    status, optimal, improvements = "greedy", False, 0
    if int(best.used().sum()) <= lb:
        return status, True, 0
    candidates = _full_model_gpus(prob, best)
    n_vars = sum(int(prob.allowed(i)[candidates].sum()) for i in range(prob.n_items)
                 if i not in prob.fixed)
    run_lns = bool(prob.n_items)
    if prob.n_items and n_vars <= full_model_max_vars:
        # Small enough for one model: most of the budget goes to it; LNS gets the rest
        # only if the model did not prove the cost optimal.
        res = solve_region(prob, best, list(candidates), budget, seed, workers,
                           budget.plan_left() * 0.6, move_budget, full=True, phases=True)
        if res is not None and res.assignment is not None:  # else: no better than greedy
            status = res.status.lower()
            optimal = res.status in ("OPTIMAL", "COST_OPTIMAL") and (
                len(candidates) == prob.n_gpus or _interchangeable(prob))
            improvements += int(res.assignment is not None)
            run_lns = not optimal
    if not run_lns or budget.done():
        return status, optimal, improvements
    status = "lns" if status == "greedy" else status + "+lns"
    if eject(prob, best, budget, move_budget, share=0.25 if prob.n_items > 2_000 else 1.0):
        improvements += 1
    if ruin_recreate(prob, best, budget, rng, reserve=budget.plan_left() * (1 - rr_share),
                     max_iterations=int(max_iterations * rr_share), target=lb):
        improvements += 1
    while not budget.done() and int(best.used().sum()) > lb:
        victims, receivers = neighbourhood(prob, best, rng, size)
        if not victims or not receivers:
            break
        before = best.cost(), int(best.used().sum())
        reshape = budget.iterations % 2 == 1
        if reshape:
            # Re-pack victims and receivers together for the lowest summed peak:
            # flatter GPUs leave room where the next ejection needs it.
            res = solve_region(prob, best, sorted(set(receivers) | set(victims)),
                               budget, seed + budget.iterations, workers, sub_limit,
                               move_budget)
        else:
            res = solve_region(prob, best, receivers, budget, seed + budget.iterations,
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
    return status, optimal, improvements


def _plan(prob: PackProblem, best: Packing, bounds: Bounds, status: str, optimal: bool,
          improvements: int, budget: Budget, *, seed: int, move_budget: int | None,
          pr_gpus: int, rb_gpus: int, ffd_gpus: int, greedy_gpus: int, time_limit: float,
          wall: float) -> tuple[PackPlan, dict[str, tuple[str, list[int]]]]:
    lb = bounds.best
    used = best.used()
    gpus_used = int(used.sum())
    if gpus_used == lb and not optimal:
        optimal = bool(np.allclose(prob.gpu_price, prob.gpu_price[0])) if prob.n_gpus else True
    assignment = {prob.ids[i]: (prob.node_names[prob.gpu_node[g[0]]],
                                [int(prob.gpu_local[x]) for x in g])
                  for i, g in enumerate(best.where) if g is not None}
    summed_peak = float(sum(u.peak for u in gpu_usage(prob, assignment)))
    whole = int(prob.num_gpu.sum())
    det = budget.deterministic and budget.stopped_by != "wall-clock deadline"
    plan = PackPlan(
        assignments=[Assignment(workload=w, node=n, gpus=gl) for w, (n, gl) in assignment.items()],
        gpus_used=gpus_used, cost_per_hour=float(prob.gpu_price[used].sum()),
        summed_peak=summed_peak, lower_bound=lb,
        load_lower_bound=int(bounds.values.get("load") or 0),
        gap=(gpus_used - lb) / lb if lb else 0.0, status=status, optimal=optimal,
        peak_reservation_gpus=pr_gpus, profile_ffd_gpus=ffd_gpus, greedy_gpus=greedy_gpus,
        # deterministic runs report deterministic seconds, so the JSON is byte-identical
        solve_seconds=round(budget.dtime, 3) if det else wall,
        solve_seconds_kind="deterministic" if det else "wall",
        slots=prob.slots, headroom=prob.headroom,
        moves=best.moves(), move_budget=move_budget,
        exclusive_workloads=int(prob.exclusive.sum()), lns_iterations=budget.iterations,
        lns_improvements=improvements, seed=seed, bounds=bounds.values,
        bounds_cut=bounds.cut, binding_bound=bounds.binding, request_booking_gpus=rb_gpus,
        whole_gpu_gpus=whole,
        saving={"vs_peak_reservation": _saving(gpus_used, pr_gpus),
                "vs_request_booking": _saving(gpus_used, rb_gpus),
                "vs_whole_gpus": _saving(gpus_used, whole),
                "headline": "vs_peak_reservation"},
        time_limit=time_limit, deterministic=budget.deterministic,
        stopped_by=budget.stopped_by)
    return plan, assignment


def _saving(used: int, baseline: int) -> float:
    return round(1 - used / baseline, 6) if baseline else 0.0


def _interchangeable(prob: PackProblem) -> bool:
    """All GPUs alike and every workload single-GPU: any plan can be relabelled onto the
    GPUs greedy used, so a model over just those loses nothing."""
    return (prob.n_gpus > 0 and bool((prob.num_gpu == 1).all()) and not prob.current
            and len(set(prob.gpu_model)) == 1 and bool((prob.gpu_mem == prob.gpu_mem[0]).all())
            and bool(np.allclose(prob.gpu_price, prob.gpu_price[0])))


def _full_model_gpus(prob: PackProblem, pk: Packing) -> np.ndarray:
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
