"""The plan in the simulator's loop: periodic CP-SAT re-plans that `tidal` follows.

Every `every_s` (and sooner, at the next check, after a large change: the waiting queue
grew or shrank by a quarter, or the guard closed GPUs) the re-planner hands running and
queued work to `packing.replan.replan`, puts the targets on `ClusterState.plan` (the
`tidal` policy prefers a job's planned GPUs and falls back to its online score), and
checkpoints and moves the running training the plan moved, within the move budget and
never inside a promised window. The moved jobs queue again and, at the pass that
follows, are placed by the plan like any queued job. This is the leader's loop in the
extender, run on simulated time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from gsched.scheduler.packing.replan import Replan, WorkItem, replan, window_load
from gsched.simulator.guard import GuardConfig
from gsched.simulator.hook import LoopHook

if TYPE_CHECKING:
    from gsched.simulator.engine import Simulation, _Run


class Replanner(LoopHook):
    """The re-plan hook of one simulation; see the module docstring."""

    def __init__(self, every_s: float, guard: GuardConfig | None = None,
                 time_limit: float = 0.5, move_budget: int = 4, window: int = 8,
                 max_queued: int = 64, check_s: float = 900.0, seed: int = 0) -> None:
        self.every_s = every_s
        self.promise_s = guard.promise_s if guard is not None else 0.0
        self.time_limit, self.move_budget, self.window = time_limit, move_budget, window
        self.max_queued, self.check_s, self.seed = max_queued, min(check_s, every_s), seed
        self.last_plan = -np.inf
        self.last_queue = 0
        self.replans = 0
        self.infeasible = 0
        self.moves = 0
        self.seconds = 0.0

    def first_time(self, start: float) -> float:
        return start + 1.0  # once the first arrivals are in

    def next_time(self, t: float) -> float:
        return t + self.check_s

    def _due(self, sim: Simulation, t: float) -> bool:
        if t - self.last_plan >= self.every_s:
            return True
        q = sim.queued
        return abs(q - self.last_queue) > max(4, self.last_queue // 4) or bool(
            sim.state.blocked.any())

    def fire(self, sim: Simulation, t: float) -> bool:
        if not self._due(sim, t):
            return False
        st = sim.state
        slots, slot = st.slots, st.current_slot
        running, queued = [], []
        for r in st.running.values():
            job = r.job
            if not job.num_gpu:
                continue
            load = (window_load(job, slots, slot, self.window) if job.preemptible
                    else r.load)
            running.append(WorkItem(job, load, (st.node_names[r.placement.node],
                                                tuple(r.placement.gpus))))
        waiting = sorted((run for run in sim.runs.values() if run.waiting and run.job.num_gpu),
                         key=lambda run: sim.policy.queue_key(run.job))[: self.max_queued]
        for run in waiting:
            job = run.job
            load = (window_load(job, slots, slot, self.window) if job.preemptible
                    else job.load_profile(slots))
            queued.append(WorkItem(job, load))
        plan = replan(running, queued, sim.cluster, sim.policy.config.headroom,
                      self.move_budget, self.time_limit, self.seed + self.replans)
        self._record(plan, sim, t)
        st.plan = {jid: (st.node_index[node], gpus) for jid, (node, gpus) in
                   plan.targets.items()}
        freed = False
        for jid in plan.moves[: self.move_budget]:
            run = sim.runs[jid]
            if jid in st.running and self.may_move(sim, run, t):
                sim._evict(run, planned=True)
                self.moves += 1
                freed = True
        return freed or bool(queued)

    def _record(self, plan: Replan, sim: Simulation, t: float) -> None:
        self.replans += 1
        self.infeasible += int(plan.status != "ok")
        self.seconds += plan.seconds
        self.last_plan = t
        self.last_queue = sim.queued

    def may_move(self, sim: Simulation, run: _Run, now: float) -> bool:
        return run.job.kind != "training" or now - run.run_start >= self.promise_s

    def figures(self) -> dict[str, float | int | None]:
        return {"replans": self.replans, "replan_infeasible": self.infeasible,
                "replan_moves": self.moves, "replan_seconds": self.seconds}
