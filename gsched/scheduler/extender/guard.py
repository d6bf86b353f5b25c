"""The load guard on the live path: agent reports over the safe line evict training.

Forecasts book the load a GPU *should* carry; the agents measure what it carries. When a
report shows a GPU that holds inference over `safe_line` (the report's mean utilisation,
so one report interval of evidence, ~10 s with the agent's defaults), the guard:
- closes the GPU to new work (`ClusterState.blocked`; the policies' filters skip it)
  until a report shows it under `recede_line`, and a GPU it tripped on at least until
  the forecast slot changes (re-admitting training within the slot that just overloaded
  would overload it again: evictions bounce), on every replica (local state); a
  GPU measured more than `forecast_tolerance` over its forecast is closed too (its
  forecast valley is wrong today), so evicted training does not land on the next
  surging GPU;
- on the leader, evicts the best-effort (preemptible) training pods on that GPU through
  the Eviction API, newest first, until their booked load covers the excess. Their
  controllers recreate them and gsched places them where the measurement is quiet.

At a slot boundary the forecast changes before any agent has measured the new slot. A
background step (`start()`, once a second) closes each GPU whose last report is more
than `forecast_tolerance` over the new slot's forecast, until a report shows the valley
is real; work that left the GPU since that report is taken off the measurement at its
booked load. Without it, a peak that comes late lets training in at the boundary and the
guard evicts it one report later (the simulator's `Guard.on_slot`, the same rule). The
same step re-phases bookings: each pod's measured usage per slot (`extender/rephase.py`)
moves the booking of a service whose day runs late or early, as the simulator's
`PhaseTracker` does with the same `policies.rephase` code.

It runs inside report ingestion (`IngestService(on_report=guard.on_report)`), so the
reaction time is one report interval, not the next 15-minute slot. Each action is
counted: `gsched_guard_trips_total` (GPUs found over the line),
`gsched_guard_evictions_total`, `gsched_guard_blocked_gpus` (closed now). The simulator
runs the same rule at the same interval (`gsched/simulator/guard.py`).
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable

import numpy as np

from gsched.agents.model import Report
from gsched.scheduler.extender.periodic import PeriodicStep
from gsched.scheduler.extender.rephase import LiveRephaser
from gsched.scheduler.extender.verbs import Extender
from gsched.scheduler.policies.state import EPS

log = logging.getLogger(__name__)

Evict = Callable[[str, str], None]  # (namespace, name)


class LoadGuard(PeriodicStep):
    """See the module docstring. `on_report` is safe to call from the ingest thread;
    `start()` runs the slot-boundary check (`step`) in a thread of its own."""

    thread_name = "gsched-guard"

    def __init__(self, extender: Extender, evict: Evict | None, *,
                 is_leader: Callable[[], bool] = lambda: True, safe_line: float = 0.95,
                 recede_line: float = 0.85, forecast_tolerance: float = 0.15,
                 hold_to_slot_end: bool = True, verify_valleys: bool = True,
                 rephase: bool = True) -> None:
        if not 0 < recede_line <= safe_line:
            raise ValueError(f"need 0 < recede_line <= safe_line, got {recede_line}, "
                             f"{safe_line}")
        self.extender = extender
        self.evict = evict
        self.is_leader = is_leader
        self.safe_line = safe_line
        self.recede_line = recede_line
        self.forecast_tolerance = forecast_tolerance
        self.hold_to_slot_end = hold_to_slot_end
        #: GPUs the guard tripped on, held closed until the forecast slot changes
        self.held: set[tuple[int, int]] = set()
        self._held_slot = -1
        self.verify_valleys = verify_valleys
        #: (node, GPU) -> (measured, slot, booked load of that slot) at its last report
        self.last: dict[tuple[str, int], tuple[float, int, float]] = {}
        self._checked_slot: int | None = None
        #: per-pod measured days, and the bookings they shift (None: off)
        self.rephaser = LiveRephaser() if rephase else None
        if self.rephaser is not None:
            extender.arrival_view = functools.partial(self.rephaser.arrival, extender)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def on_report(self, report: Report) -> list[tuple[str, str]]:
        """Act on one accepted report; returns the (namespace, name) pods evicted."""
        ext = self.extender
        m = ext.metrics
        victims: list[tuple[str, str]] = []
        with ext.lock:
            st = ext.state
            n = st.node_index.get(report.node)
            if n is None:
                return []
            slot = st.current_slot
            if self.rephaser is not None:
                self.rephaser.observe(report, st.slot_seconds)
            if slot != self._held_slot:
                self.held.clear()
                self._held_slot = slot
            changed = False
            for s in report.gpus:
                g = s.index
                if g >= st.max_gpus or not st.gpu_valid[n, g] or not s.util:
                    continue
                measured = float(np.mean(s.util))
                self.last[(report.node, g)] = (measured, slot, float(st.load[n, g, slot]))
                infer = st.inference_on_gpu[n, g] > 0
                over = infer and measured > self.safe_line
                hot = infer and (measured > self.recede_line or measured - float(
                    st.load[n, g, slot]) > self.forecast_tolerance)
                if over:
                    m.guard_trips.inc()
                    victims += self._victims(n, g, measured - self.safe_line, slot)
                    if self.hold_to_slot_end:
                        self.held.add((n, g))
                hot = hot or (n, g) in self.held
                if bool(st.blocked[n, g]) != (over or hot):
                    st.blocked[n, g] = over or hot
                    changed = True
            if changed:
                st.node_version[n] += 1
            m.guard_blocked.set(int(st.blocked.sum()))
        if not victims or self.evict is None or not self.is_leader():
            return []  # without an Eviction API (static mode) the guard only closes GPUs
        done = []
        for ns, name in dict.fromkeys(victims):
            try:
                self.evict(ns, name)
            except Exception as e:  # a PDB said no, or the pod is gone: next report
                log.warning("guard: evicting %s/%s from %s: %s", ns, name, report.node, e)
                continue
            m.guard_evictions.inc()
            done.append((ns, name))
        if done:
            log.info("guard: %s over %.2f measured; evicted %d training pod(s)", report.node,
                     self.safe_line, len(done))
        return done

    def step(self) -> int:
        """Once the slot has changed: close the GPUs whose last measurement is over the
        new slot's forecast, then re-phase the bookings whose measured day runs late or
        early (see the module docstring); returns how many GPUs it closed."""
        if not self.verify_valleys and self.rephaser is None:
            return 0
        ext = self.extender
        closed = 0
        with ext.lock:
            st = ext.state
            st.now = ext.clock()
            slot = st.current_slot
            if slot == self._checked_slot:
                return 0
            self._checked_slot = slot
            if self.verify_valleys:
                closed = self._close_unproven_valleys(slot)
            if self.rephaser is not None:
                pods = {uid: (pj.namespace, pj.name) for uid, pj in ext.placed.items()}
                moved = self.rephaser.on_slot(st, pods)
                if moved:
                    ext.metrics.rephased_bookings.inc(moved)
                    log.info("slot %d: %d booking(s) re-phased to the measured day", slot,
                             moved)
        if closed:
            log.info("guard: slot %d: %d GPU(s) closed until measured in the new slot",
                     slot, closed)
        return closed

    def _close_unproven_valleys(self, slot: int) -> int:
        """Close GPUs holding inference whose last report is over `slot`'s forecast by
        more than the tolerance (work gone since is taken off at its booking; lock held)."""
        ext = self.extender
        st = ext.state
        closed = 0
        for (node, g), (measured, then, booked) in self.last.items():
            n = st.node_index.get(node)
            if (n is None or then == slot or g >= st.max_gpus or st.blocked[n, g]
                    or not st.inference_on_gpu[n, g]):
                continue
            still = measured + float(st.load[n, g, then]) - booked
            if still - float(st.load[n, g, slot]) > self.forecast_tolerance + EPS:
                st.blocked[n, g] = True
                st.node_version[n] += 1
                closed += 1
        if closed:
            ext.metrics.guard_boundary_closures.inc(closed)
            ext.metrics.guard_blocked.set(int(st.blocked.sum()))
        return closed

    def _victims(self, n: int, g: int, excess: float, slot: int) -> list[tuple[str, str]]:
        """Preemptible pods on GPU (n, g), newest first, until their load covers `excess`
        (call with the extender's lock held)."""
        ext, st = self.extender, self.extender.state
        out = []
        for uid in reversed(list(st.node_jobs[n])):  # start order, newest last
            r = st.running.get(uid)
            pj = ext.placed.get(uid)
            if r is None or pj is None or not r.job.preemptible or g not in r.placement.gpus:
                continue
            out.append((pj.namespace, pj.name))
            excess -= float(r.load[slot])
            if excess <= EPS:
                break
        return out
