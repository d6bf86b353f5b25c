"""The tidal loop's hooks into the simulator: the load guard and periodic re-plans.

The engine knows hooks only through `hook.LoopHook`'s methods; this module builds the
list a `SimConfig` asks for, so the engine stays a plain event loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gsched.simulator.guard import Guard
from gsched.simulator.hook import LoopHook
from gsched.simulator.phase import PhaseTracker

if TYPE_CHECKING:
    from gsched.simulator.engine import Simulation


def make_hooks(sim: Simulation) -> list[LoopHook]:
    """The guard and re-phasing (when configured), the re-planner (with `replan_every_s`)."""
    cfg = sim.config
    hooks: list[LoopHook] = []
    if cfg.guard is not None:
        hooks.append(Guard(cfg.guard))
        if cfg.guard.rephase:  # after the guard's boundary check, which reads old bookings
            hooks.append(PhaseTracker())
    if cfg.replan_every_s is not None:
        from gsched.simulator.replan import Replanner
        hooks.append(Replanner(cfg.replan_every_s, cfg.guard))
    return hooks
