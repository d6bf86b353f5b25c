"""The leader's planning loop: move preemptible training out before a predicted peak.

The simulator calls `Policy.on_slot` at every time-of-day slot change; in a cluster this
loop does. `lead_s` before each slot starts, the leader asks the policy which running
preemptible pods must leave for the coming slot (for `tidal`: those on GPUs whose
forecast for that slot exceeds capacity minus headroom) and evicts them through the
Eviction API, which honours PodDisruptionBudgets and gives the pod its termination grace
period to checkpoint. Their controller (a Job, a training operator) recreates them, and
gsched places the new pods where the coming hours are quiet.

Request-based policies never ask for moves, so the loop is idle under them. Only the
leader plans; followers skip every step.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from gsched.models import DAY_SECONDS
from gsched.scheduler.extender.periodic import PeriodicStep
from gsched.scheduler.extender.verbs import Extender

log = logging.getLogger(__name__)

Evict = Callable[[str, str], None]  # (namespace, name)


class Planner(PeriodicStep):
    thread_name = "gsched-planner"

    def __init__(self, extender: Extender, evict: Evict, *,
                 is_leader: Callable[[], bool] = lambda: True, lead_s: float = 120.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.extender = extender
        self.evict = evict
        self.is_leader = is_leader
        self.lead_s = lead_s
        self.clock = clock
        self._planned_for: int | None = None
        self._last_plan: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def upcoming_slot(self, now: float) -> int:
        """The slot that starts within `lead_s` of `now` (or the current one)."""
        st = self.extender.state
        return int(((now + self.lead_s) % DAY_SECONDS) // st.slot_seconds) % st.slots

    def step(self) -> list[tuple[str, str]]:
        """Plan once if a new slot is coming; returns the (namespace, name) evicted."""
        now = self.clock()
        m = self.extender.metrics
        if self._last_plan is not None:
            m.plan_age.set(now - self._last_plan)
        if not self.is_leader():
            self._planned_for = None  # a new leader plans the coming slot afresh
            return []
        slot = self.upcoming_slot(now)
        if slot == self._planned_for:
            return []
        ext = self.extender
        with ext.lock:
            ext.state.now = now
            ids = ext.policy.on_slot(ext.state, slot, now)
            moves = [(ext.placed[u].namespace, ext.placed[u].name, u) for u in ids
                     if u in ext.placed and ext.placed[u].job.preemptible]
        done = []
        for ns, name, _uid in moves:
            try:
                self.evict(ns, name)
            except Exception as e:  # a PDB said no, or the pod is gone: next slot
                log.warning("moving %s/%s out before slot %d: %s", ns, name, slot, e)
                continue
            m.preemptions.labels(kind="training").inc()
            done.append((ns, name))
        if moves:
            log.info("slot %d: moved %d of %d training pods out", slot, len(done), len(moves))
        self._planned_for = slot
        self._last_plan = now
        m.plan_age.set(0.0)
        return done
