"""The load guard and the promised window, in the simulator.

Forecasts are wrong some days. The guard acts on *measured* load, not the forecast: at
every agent report (every `report_interval_s`, 10 s by default: one sample a second,
a report every ten) it reads each GPU's actual load, and where a GPU holding inference
is over the safe line it evicts best-effort (preemptible) training from that GPU at
once, newest first, until the measured load is back under the line, and closes the GPU
to new work (`ClusterState.blocked`) until the load recedes under `recede_line`. A GPU
measured more than `forecast_tolerance` over its forecast is closed too: its forecast
valley is wrong today, so evicted training must not land there and trip the guard again
(without this, a cluster-wide surge bounces training from GPU to GPU), and a GPU the
guard found over the safe line stays closed until the forecast slot changes (re-admitting training
in the slot that just overloaded overloads it again). So a surge costs
training a restart, within one report interval, instead of costing the inference SLO
until the next 15-minute slot.

At a slot boundary the forecast changes before any agent has measured the new slot. A
valley the forecast opens there is trusted only once measured: a GPU whose last report
is more than `forecast_tolerance` over the *new* slot's forecast is closed at the
boundary (`on_slot`), before the queue is offered the room, and the next report
reopens it if the load did fall. Without this, a peak that comes late lets training in
at the boundary, and the guard evicts it one report later, after it has overloaded the
inference beside it for that long.

The promised window (GFS, ASPLOS'26, for spot tasks): training placed in a valley is
promised `promise_s` of run before a *planned* move (the policy's `on_slot` or a re-plan)
may take it away; only the guard may break the promise, because then the measurement
says the inference is in trouble.

`Guard` is a simulator hook: `first_time`, `fire(sim, t)` at each report, `may_move`
for planned moves, `figures()` for the result. `training_figures` gives the per-job
eviction figures for every run, guard or not.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, Field

from gsched.scheduler.policies.state import EPS
from gsched.simulator.hook import LoopHook

if TYPE_CHECKING:  # the engine imports this module; only type names go the other way
    from gsched.simulator.engine import Simulation, _Run


class GuardConfig(BaseModel):
    """The guard's knobs; defaults match the agent's defaults (1 s samples, report
    every 10) and the tidal policy's headroom."""

    report_interval_s: float = Field(default=10.0, gt=0,
                                     description="seconds between agent reports")
    safe_line: float = Field(default=1.0, gt=0, le=1.5,
                             description="measured load above which training is evicted "
                                         "(at or above the policies' usable capacity)")
    recede_line: float = Field(default=0.9, gt=0, le=1.5,
                               description="a closed GPU reopens below this measured load")
    forecast_tolerance: float = Field(default=0.15, ge=0,
                                      description="a GPU measured this far over its forecast "
                                                  "takes no new work")
    hold_to_slot_end: bool = Field(default=True,
                                   description="a GPU measured over the safe line stays closed "
                                               "until the forecast slot changes")
    verify_valleys: bool = Field(default=True,
                                 description="at a slot boundary, close GPUs whose last "
                                             "measured load is over the new slot's forecast")
    rephase: bool = Field(default=True,
                          description="book a service's forecast shifted when its measured "
                                      "load says the day runs late or early "
                                      "(simulator/phase.py)")
    promise_s: float = Field(default=3600.0, ge=0,
                             description="minimum run promised to training before a planned "
                                         "move (the guard may still evict)")


class Guard(LoopHook):
    """The guard hook of one simulation; see the module docstring."""

    def __init__(self, config: GuardConfig) -> None:
        self.config = config
        self.evictions = 0
        self.blocks = 0
        self.fires = 0
        self.deferred_moves = 0
        self.evicted_jobs: dict[str, int] = {}
        #: GPUs measured over the safe line, held closed until the slot changes
        self.held: set[tuple[int, int]] = set()
        self._held_slot = -1
        #: what the agents measured at the last report (per GPU), and the booked load
        #: of that slot then, for `on_slot`
        self._last_measured: np.ndarray | None = None
        self._last_booked: np.ndarray | None = None
        self._last_slot = -1
        self.boundary_closures = 0

    # -- the hook --------------------------------------------------------------
    def first_time(self, start: float) -> float:
        """Reports fall half an interval off the slot grid: agents' clocks are not
        aligned with the forecast's slots, so a change is seen half a report late."""
        step = self.config.report_interval_s
        return (math.floor(start / step) + 0.5) * step + (step if start % step else 0.0)

    def next_time(self, t: float) -> float:
        return t + self.config.report_interval_s

    def measured(self, sim: Simulation) -> np.ndarray:
        """Per GPU, the load the agents measure now (the actual, not the forecast)."""
        return sim.actual[:, :, sim.state.current_slot]

    def fire(self, sim: Simulation, t: float) -> bool:
        """One round of agent reports. GPUs holding inference are closed to new work
        while measured over the recede line or over their forecast by more than
        `forecast_tolerance` (the forecast is wrong there: its valley is not to be
        trusted), and reopened when neither holds; over the safe line, their training is
        evicted. True when capacity was freed or reopened (the queue should retry)."""
        st = sim.state
        meas = self.measured(sim)
        cfg = self.config
        if cfg.verify_valleys:  # what `on_slot` compares the next slot's forecast with
            self._last_measured = meas.copy()
            self._last_booked = st.load[:, :, st.current_slot].copy()
            self._last_slot = st.current_slot
        infer = st.inference_on_gpu > 0
        over = (meas > cfg.safe_line + EPS) & infer
        hot = infer & ((meas > cfg.recede_line + EPS)
                       | (meas - st.load[:, :, st.current_slot] > cfg.forecast_tolerance + EPS))
        hot |= over
        if cfg.hold_to_slot_end:
            if st.current_slot != self._held_slot:
                self.held.clear()
                self._held_slot = st.current_slot
            self.held.update(zip(*(a.tolist() for a in np.nonzero(over)), strict=True))
            for n, g in self.held:
                hot[n, g] = True
        freed = False
        changed = hot != st.blocked
        if changed.any():
            reopened = st.blocked & ~hot
            freed = bool(reopened.any())
            for n in np.flatnonzero(reopened.any(axis=1)).tolist():
                sim.retry.note_release(n)  # a reopened GPU is room, as a release is
            self.blocks += int((hot & ~st.blocked).sum())
            st.blocked[:] = hot
            st.node_version[np.flatnonzero(changed.any(axis=1))] += 1
        if not over.any():
            return freed
        self.fires += 1
        excess = np.where(over, meas - cfg.safe_line, 0.0)
        slot = st.current_slot
        for n, g in zip(*np.nonzero(over), strict=True):
            if excess[n, g] <= EPS:
                continue
            ids = [j for j in sim.on_gpu.get((int(n), int(g)), ()) if
                   st.running[j].job.preemptible]
            ids.sort(key=lambda j: -sim.runs[j].run_start)  # newest first
            for jid in ids:
                if excess[n, g] <= EPS:
                    break
                run = sim.runs[jid]
                gpus = list(st.running[jid].placement.gpus)
                load = self._actual_of(sim, run)[slot]
                sim._evict(run, planned=False)
                excess[n, gpus] -= load
                self.evictions += 1
                self.evicted_jobs[jid] = self.evicted_jobs.get(jid, 0) + 1
                freed = True
        return freed

    def on_slot(self, sim: Simulation) -> None:
        """The forecast moved to a new slot: close the GPUs holding inference whose last
        measured load is over the new slot's forecast by more than `forecast_tolerance`,
        until the next report shows the valley is real (see the module docstring).

        Work that left a GPU since that report (a planned move at this boundary) is taken
        off the measurement at its booked load, so a GPU is not closed for emptying."""
        cfg = self.config
        if self._last_measured is None:
            return
        st = sim.state
        still = self._last_measured + (st.load[:, :, self._last_slot] - self._last_booked)
        unproven = ((st.inference_on_gpu > 0) & ~st.blocked
                    & (still - st.load[:, :, st.current_slot] > cfg.forecast_tolerance + EPS))
        if unproven.any():
            self.boundary_closures += int(unproven.sum())
            st.blocked |= unproven
            st.node_version[np.flatnonzero(unproven.any(axis=1))] += 1

    @staticmethod
    def _actual_of(sim: Simulation, run: _Run) -> np.ndarray:
        return run.actual if run.actual is not None else sim.state.running[run.job.id].load

    def may_move(self, sim: Simulation, run: _Run, now: float) -> bool:
        """A planned move of a promised job waits until its window has run out, unless
        its GPUs' load is over the safe line now: then the guard would evict it at the
        next report anyway, and a planned checkpoint loses less than an eviction."""
        if run.job.kind != "training" or now - run.run_start >= self.config.promise_s:
            return True
        r = sim.state.running.get(run.job.id)
        if r is not None and r.placement.gpus:
            meas = self.measured(sim)[r.placement.node, list(r.placement.gpus)]
            if (meas > self.config.safe_line + EPS).any():
                return True
        self.deferred_moves += 1
        return False

    def figures(self) -> dict[str, float | int | None]:
        return {"guard_evictions": self.evictions, "guard_gpu_blocks": self.blocks,
                "guard_report_rounds_over_line": self.fires,
                "promise_deferred_moves": self.deferred_moves,
                "guard_boundary_closures": self.boundary_closures}


def training_figures(sim: Simulation) -> dict[str, float | int | None]:
    """Evictions per training job, GPU-hours lost against training GPU-hours done (at
    the last event), and the training jobs' own queueing delay (inference excluded)."""
    started = 0
    work_s = 0.0
    waits = []
    for run in sim.runs.values():
        job = run.job
        if job.kind != "training" or run.first_start is None:
            continue
        started += 1
        waits.append(run.first_start - job.submit_time)
        if job.duration is not None:
            done = job.duration if job.id not in sim.state.running and not run.waiting \
                else max(job.duration - run.remaining, 0.0)
            work_s += done * job.gpu_request
    lost = sim.lost_gpu_s
    return {
        "evictions_per_training_job": (sim.preemptions / started) if started else None,
        "training_gpu_hours": work_s / 3600.0,
        "gpu_hours_lost_share": (lost / work_s) if work_s > 0 else None,
        "training_queue_delay_p95_s": float(np.percentile(waits, 95)) if waits else None,
    }
