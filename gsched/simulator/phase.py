"""Re-phasing in the simulator: book a service's forecast shifted when today runs late.

At each slot boundary, every running inference job with a daily profile and at least a
window of measured load (its actual load here; its pod's usage in the agents' reports on
a cluster, `extender/guard.py`) is handed to `policies.rephase.Rephasing`, which moves
its booking when the forecast fits the last slots clearly better shifted. The policy's
planned moves, the guard's forecast checks and the next placements then all see the day
as it runs. A service too new for a window of its own is booked at the lag most
measured services agree on (`Rephasing.consensus`), and a new arrival is booked at that
lag before it is placed (`admit`), so it shares GPUs on the same footing as the rest. A
service already running when the trace begins counts as measured the day before (its
actual day repeats), as it would be on a cluster whose agents ran yesterday.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from gsched.scheduler.policies.rephase import Rephasing
from gsched.simulator.hook import LoopHook

if TYPE_CHECKING:
    from gsched.models import Job
    from gsched.simulator.engine import Simulation


class PhaseTracker(LoopHook):
    """The re-phasing hook of one simulation (slot boundaries only; see the module)."""

    def __init__(self, window: int = 8, max_lag: int = 8) -> None:
        self.rephasing = Rephasing(window, max_lag)
        self.start = 0.0

    def first_time(self, start: float) -> float:
        self.start = start
        return math.inf  # nothing to do between slot boundaries

    def admit(self, sim: Simulation, job: Job) -> Job:
        """A new service is booked at the cluster's lag (`Rephasing.arrival_view`)."""
        return self.rephasing.arrival_view(job, sim.state.slots)

    def on_slot(self, sim: Simulation) -> None:
        st = sim.state
        if sim.actual is st.load:  # load is the forecast: nothing can run late
            return
        rp = self.rephasing
        idx = rp.window_slots(st.current_slot, st.slots)
        need = rp.window * st.slot_seconds
        fresh = []
        services = [jid for jid, r in st.running.items()
                    if r.job.kind == "inference" and r.job.profile is not None]
        rp.forget(set(services))  # the cluster's lag is that of the services running now
        for jid in services:
            run = sim.runs[jid]
            if run.actual is None:
                continue
            # a service running when the trace begins was measured the day before
            if st.now - run.run_start >= need or run.job.submit_time <= self.start:
                rp.update(st, jid, run.actual[idx], idx)
            else:
                fresh.append(jid)
        lag = rp.settle()
        for jid in fresh:
            rp.adopt(st, jid, lag)

    def figures(self) -> dict[str, float | int | None]:
        return {"rephased_bookings": self.rephasing.rephased}
