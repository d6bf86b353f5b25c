"""Tidal time planning: preemptible training placed in the valleys of residual capacity.

The spatial packer decides where inference lives; what each GPU has left over the day
(capacity minus headroom minus the inference forecast) rises at night and falls at the
peak. This module places training in *time* as well as space over a planning horizon:
each job may run in up to `max_segments` pieces, each piece on one GPU, and every
piece after the first costs a checkpoint + restart (`restart_slots` of its run time).

CP-SAT model (`build_training_model`), in the style of OR-Tools'
`cumulative_variable_profile_sample_sat`:
- per (job, segment, GPU) an optional interval of variable length; a segment uses at
  most one GPU, segment k+1 only if segment k, in time order;
- per job a no-overlap over all its pieces (a job runs in one place at a time) and
  `work = sum(lengths) - restart_slots * (pieces - 1) <= remaining work`;
- per GPU a cumulative over the pieces on it, with the inference forecast as fixed
  "blocker" intervals (runs of equal load), against the usable capacity.
Objective: the most training work done in the horizon, then fewer restarts, then
earlier finishes. `check_training_plan` re-verifies a plan slot by slot, independently.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from ortools.sat.python import cp_model
from pydantic import BaseModel, ConfigDict, Field

SCALE = 1000


class TrainingJob(BaseModel):
    """A preemptible training job to place in time: per-GPU load and work left."""

    model_config = ConfigDict(frozen=True)

    id: str
    load: float = Field(gt=0, le=1, description="per-GPU load while running")
    work_slots: int = Field(gt=0, description="slots of running left to finish")
    allowed: tuple[int, ...] | None = None  # GPU indices it may use (None: all)


class Piece(BaseModel):
    job: str
    gpu: int
    start: int
    end: int  # exclusive, in slots from the start of the horizon


class TrainingPlan(BaseModel):
    """Pieces per job; `work_done` is effective work after restart costs."""

    pieces: list[Piece]
    work_done: dict[str, int]
    restarts: int
    status: str
    objective: float | None
    bound: float | None
    solve_seconds: float


def _runs(row: np.ndarray) -> list[tuple[int, int, int]]:
    """(start, end, value) of maximal runs of equal value (zeros dropped)."""
    out = []
    start = 0
    for t in range(1, len(row) + 1):
        if t == len(row) or row[t] != row[start]:
            if row[start] > 0:
                out.append((start, t, int(row[start])))
            start = t
    return out


class _Vars:
    def __init__(self) -> None:
        self.pres: dict[tuple[int, int, int], cp_model.IntVar] = {}
        self.start: dict[tuple[int, int, int], cp_model.IntVar] = {}
        self.size: dict[tuple[int, int, int], cp_model.IntVar] = {}
        self.work: dict[int, cp_model.IntVar] = {}
        self.seg_used: dict[tuple[int, int], cp_model.IntVar] = {}


def build_training_model(firm: np.ndarray, jobs: Sequence[TrainingJob], capacity: float,
                         restart_slots: int = 1, max_segments: int = 3
                         ) -> tuple[cp_model.CpModel, _Vars]:
    """The CP-SAT model described in the module docstring.

    firm: (gpus, horizon) forecast load of the work that stays (inference), in [0, 1].
    """
    m = cp_model.CpModel()
    n_gpu, horizon = firm.shape
    cap = int(math.floor(capacity * SCALE + 1e-9))
    firm_u = np.minimum(np.ceil(firm * SCALE - 1e-6).astype(np.int64), cap)
    v = _Vars()
    per_gpu: dict[int, list[tuple[cp_model.IntervalVar, int]]] = {g: [] for g in range(n_gpu)}
    obj_work, obj_pen = [], []
    for j, job in enumerate(jobs):
        demand = int(math.ceil(job.load * SCALE - 1e-6))
        gpus = range(n_gpu) if job.allowed is None else job.allowed
        gpus = [g for g in gpus if firm_u[g].min() + demand <= cap]  # can ever run there
        mine: list[cp_model.IntervalVar] = []
        ends = []
        lengths = []
        prev_used = None
        prev_end = None
        for s in range(max_segments):
            used = m.new_bool_var(f"u{j}_{s}")
            v.seg_used[(j, s)] = used
            if prev_used is not None:
                m.add_implication(used, prev_used)
            seg_start = m.new_int_var(0, horizon, f"ss{j}_{s}")
            seg_end = m.new_int_var(0, horizon, f"se{j}_{s}")
            seg_len = m.new_int_var(0, horizon, f"sl{j}_{s}")
            m.add(seg_end == seg_start + seg_len)
            m.add(seg_len >= 1).only_enforce_if(used)
            m.add(seg_len == 0).only_enforce_if(~used)
            pres_here = []
            for g in gpus:
                p = m.new_bool_var(f"p{j}_{s}_{g}")
                st = m.new_int_var(0, horizon, f"st{j}_{s}_{g}")
                sz = m.new_int_var(0, horizon, f"sz{j}_{s}_{g}")
                en = m.new_int_var(0, horizon, f"en{j}_{s}_{g}")
                iv = m.new_optional_interval_var(st, sz, en, p, f"i{j}_{s}_{g}")
                m.add(st == seg_start).only_enforce_if(p)
                m.add(sz == seg_len).only_enforce_if(p)
                per_gpu[g].append((iv, demand))
                mine.append(iv)
                v.pres[(j, s, g)] = p
                v.start[(j, s, g)] = st
                v.size[(j, s, g)] = sz
                pres_here.append(p)
            if pres_here:
                m.add(sum(pres_here) == used)
            else:
                m.add(used == 0)
            if prev_end is not None:
                m.add(seg_start >= prev_end).only_enforce_if(used)
            prev_used, prev_end = used, seg_end
            ends.append(seg_end)
            lengths.append(seg_len)
        if mine:
            m.add_no_overlap(mine)
        pieces = sum(v.seg_used[(j, s)] for s in range(max_segments))
        work = m.new_int_var(0, job.work_slots, f"w{j}")
        # effective work: run time minus one restart per piece after the first
        m.add(work <= sum(lengths) - restart_slots * (pieces - v.seg_used[(j, 0)]))
        v.work[j] = work
        obj_work.append(demand * work)
        obj_pen.append(pieces)
        obj_pen.extend(ends)
    for g in range(n_gpu):
        blockers = []
        for a, b, val in _runs(firm_u[g]):
            blockers.append((m.new_fixed_size_interval_var(a, b - a, f"b{g}_{a}"), val))
        items = per_gpu[g] + blockers
        if per_gpu[g]:
            m.add_cumulative([iv for iv, _ in items], [d for _, d in items], cap)
    # lexicographic: work first (scaled past any penalty), then restarts and ends
    pen_max = len(jobs) * max_segments * (horizon + 1) + 1
    m.maximize(pen_max * sum(obj_work) - sum(obj_pen))
    return m, v


def plan_training(firm: np.ndarray, jobs: Sequence[TrainingJob], capacity: float = 0.9,
                  restart_slots: int = 1, max_segments: int = 3, time_limit: float = 5.0,
                  seed: int = 0, workers: int = 1) -> TrainingPlan:
    """Solve the time plan; an empty plan (status says why) when nothing is found."""
    model, v = build_training_model(firm, jobs, capacity, restart_slots, max_segments)
    s = cp_model.CpSolver()
    s.parameters.max_time_in_seconds = time_limit
    s.parameters.random_seed = seed
    s.parameters.num_workers = workers
    status = s.solve(model)
    name = s.status_name(status)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return TrainingPlan(pieces=[], work_done={j.id: 0 for j in jobs}, restarts=0,
                            status=name.lower(), objective=None, bound=None,
                            solve_seconds=s.wall_time)
    pieces = []
    for (j, _s, g), p in v.pres.items():
        if s.boolean_value(p):
            st = s.value(v.start[(j, _s, g)])
            pieces.append(Piece(job=jobs[j].id, gpu=g, start=st,
                                end=st + s.value(v.size[(j, _s, g)])))
    pieces.sort(key=lambda x: (x.job, x.start))
    work = {jobs[j].id: int(s.value(w)) for j, w in v.work.items()}
    restarts = sum(max(sum(1 for p in pieces if p.job == job.id) - 1, 0) for job in jobs)
    return TrainingPlan(pieces=pieces, work_done=work, restarts=restarts, status=name.lower(),
                        objective=s.objective_value, bound=s.best_objective_bound,
                        solve_seconds=s.wall_time)


def check_training_plan(firm: np.ndarray, jobs: Sequence[TrainingJob], plan: TrainingPlan,
                        capacity: float = 0.9, restart_slots: int = 1,
                        tol: float = 1e-9) -> list[str]:
    """Every violation: capacity in any slot of any GPU, a job in two places at once,
    more work claimed than run time minus restarts allows, disallowed GPUs."""
    errs: list[str] = []
    n_gpu, horizon = firm.shape
    load = firm.astype(np.float64).copy()
    by_id = {j.id: j for j in jobs}
    for p in plan.pieces:
        job = by_id.get(p.job)
        if job is None:
            errs.append(f"{p.job}: unknown job")
            continue
        if not (0 <= p.start < p.end <= horizon) or not 0 <= p.gpu < n_gpu:
            errs.append(f"{p.job}: piece {p.start}-{p.end} on GPU {p.gpu} is out of range")
            continue
        if job.allowed is not None and p.gpu not in job.allowed:
            errs.append(f"{p.job}: GPU {p.gpu} not allowed")
        load[p.gpu, p.start:p.end] += job.load
    for g, t in zip(*np.nonzero(load > capacity + tol), strict=True):
        errs.append(f"GPU {g}: load {load[g, t]:.3f} > {capacity} in slot {t}")
    for job in jobs:
        mine = sorted((p for p in plan.pieces if p.job == job.id), key=lambda p: p.start)
        for a, b in zip(mine, mine[1:], strict=False):
            if b.start < a.end:
                errs.append(f"{job.id}: pieces overlap in time")
        ran = sum(p.end - p.start for p in mine)
        allowed = ran - restart_slots * max(len(mine) - 1, 0)
        if plan.work_done.get(job.id, 0) > min(allowed, job.work_slots):
            errs.append(f"{job.id}: claims {plan.work_done[job.id]} slots of work, ran "
                        f"{ran} with {max(len(mine) - 1, 0)} restart(s)")
    return errs
