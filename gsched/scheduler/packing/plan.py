"""A plan and its independent check: the output models, moves and per-GPU usage.

`check_plan` re-checks any plan from scratch with floats, independent of the CP-SAT
model and the search; tests assert against it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel

from gsched.scheduler.packing.problem import PackProblem


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
    #: every lower bound by name (None: cut by its time box), why any was cut or limited,
    #: and the name of the one that binds (equals `lower_bound`)
    bounds: dict[str, int | None] = {}
    bounds_cut: dict[str, str] = {}
    binding_bound: str = ""
    #: baselines at the same workloads: each books its request (up to a whole GPU, no
    #: headroom: the Kubernetes view) / each workload on whole GPUs of its own
    request_booking_gpus: int = 0
    whole_gpu_gpus: int = 0
    #: savings against the baselines; `headline` names the one a summary quotes
    saving: dict[str, float | str] = {}
    #: budget: the limit, whether the run is deterministic, what stopped the search, and
    #: whether `solve_seconds` is wall time or deterministic time
    time_limit: float = 0.0
    deterministic: bool = True
    stopped_by: str = ""
    solve_seconds_kind: str = "wall"


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
