"""The tidal loop's hooks into the simulator: the load guard and periodic re-plans.

The engine knows hooks only as objects with `first_time(start)`, `next_time(t)`,
`fire(sim, t) -> freed`, `on_slot(sim)` (the forecast's slot changed), `admit(sim, job)`
(how an arrival is booked),
`may_move(sim, run, now)` and `figures()`; this module builds the list a `SimConfig`
asks for, so the engine stays a plain event loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from gsched.simulator.guard import Guard
from gsched.simulator.phase import PhaseTracker

if TYPE_CHECKING:
    from gsched.models import Job
    from gsched.simulator.engine import Simulation, _Run


class Hook(Protocol):
    def first_time(self, start: float) -> float: ...
    def next_time(self, t: float) -> float: ...
    def fire(self, sim: Simulation, t: float) -> bool: ...
    def on_slot(self, sim: Simulation) -> None: ...
    def admit(self, sim: Simulation, job: Job) -> Job: ...
    def may_move(self, sim: Simulation, run: _Run, now: float) -> bool: ...
    def figures(self) -> dict[str, float | int | None]: ...


def make_hooks(sim: Simulation) -> list[Hook]:
    """The guard and re-phasing (when configured), the re-planner (with `replan_every_s`)."""
    cfg = sim.config
    hooks: list[Hook] = []
    if cfg.guard is not None:
        hooks.append(Guard(cfg.guard))
        if cfg.guard.rephase:  # after the guard's boundary check, which reads old bookings
            hooks.append(PhaseTracker())
    if cfg.replan_every_s is not None:
        from gsched.simulator.replan import Replanner
        hooks.append(Replanner(cfg.replan_every_s, cfg.guard))
    return hooks
