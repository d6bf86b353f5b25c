"""The base of the tidal loop's simulator hooks: what the engine may ask, and the
answer of a hook that has nothing to say.

The engine knows hooks only through these methods: `first_time(start)` and
`next_time(t)` (when `fire` is due; never, by default), `fire(sim, t) -> freed` (an
agent report, a re-plan), `on_slot(sim)` (the forecast's slot changed), `admit(sim,
job)` (how an arrival is booked), `may_move(sim, run, now)` (may a planned move go
ahead) and `figures()`. Each hook overrides what it acts on (`guard.Guard`,
`phase.PhaseTracker`, `replan.Replanner`; `loop.make_hooks` builds the list).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gsched.models import Job
    from gsched.simulator.engine import Simulation, _Run


class LoopHook:
    """A hook that does nothing; subclasses override what they act on."""

    def first_time(self, start: float) -> float:
        return math.inf

    def next_time(self, t: float) -> float:
        return math.inf

    def fire(self, sim: Simulation, t: float) -> bool:
        return False

    def on_slot(self, sim: Simulation) -> None:
        return None

    def admit(self, sim: Simulation, job: Job) -> Job:
        return job

    def may_move(self, sim: Simulation, run: _Run, now: float) -> bool:
        return True

    def figures(self) -> dict[str, float | int | None]:
        return {}
