"""Re-phasing in the simulator: book a service's forecast shifted when today runs late.

At each slot boundary, for every running inference job with a daily profile and at least
`window` slots of measured load (its actual load in the simulator, what its pod's usage
in the agents' reports is on a cluster), `packing.phase.phase_lag` says whether the
forecast fits the last `window` slots better shifted; if so the job's booking is moved
(`ClusterState.rebook`), so the policy's planned moves, the guard's forecast checks and
the next placements all see the day as it runs. The booking keeps its shape and margin;
only its timing moves. A job placed again starts from its own profile.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from gsched.scheduler.packing.phase import phase_lag

if TYPE_CHECKING:
    from gsched.scheduler.policies.state import Running
    from gsched.simulator.engine import Simulation, _Run


class PhaseTracker:
    """The re-phasing hook of one simulation (slot boundaries only; see the module)."""

    def __init__(self, window: int = 8, max_lag: int = 8) -> None:
        self.window, self.max_lag = window, max_lag
        #: job id -> (its Running record, its booking as placed, the lag applied)
        self.tracked: dict[str, tuple[Running, np.ndarray, int]] = {}
        self.rephased = 0

    def first_time(self, start: float) -> float:
        return math.inf  # nothing to do between slot boundaries

    def next_time(self, t: float) -> float:
        return math.inf

    def fire(self, sim: Simulation, t: float) -> bool:
        return False

    def may_move(self, sim: Simulation, run: _Run, now: float) -> bool:
        return True

    def on_slot(self, sim: Simulation) -> None:
        st = sim.state
        if sim.actual is st.load:  # load is the forecast: nothing can run late
            return
        slot, slots = st.current_slot, st.slots
        idx = (slot - self.window + np.arange(self.window)) % slots
        need = self.window * st.slot_seconds
        for jid, r in st.running.items():
            if r.job.kind != "inference" or r.job.profile is None:
                continue
            run = sim.runs[jid]
            if run.actual is None or st.now - run.run_start < need:
                continue
            seen = self.tracked.get(jid)
            if seen is None or seen[0] is not r:  # placed (again): its own profile
                seen = (r, r.load.copy(), 0)
            base, lag = seen[1], seen[2]
            new = phase_lag(run.actual[idx], base, idx, current=lag, max_lag=self.max_lag)
            if new != lag:
                st.rebook(jid, np.roll(base, new))
                self.rephased += 1
                lag = new
            self.tracked[jid] = (st.running[jid], base, lag)

    def figures(self) -> dict[str, float | int | None]:
        return {"rephased_bookings": self.rephased}
