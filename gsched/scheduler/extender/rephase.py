"""Re-phasing on the live path: each service's measured day, from its pods' usage.

Agent reports carry every pod's utilisation of each GPU (`Report.workloads`). This keeps
each pod's mean per slot for the last few slots and, at each slot change, hands the
running inference pods with a daily profile to `policies.rephase.Rephasing`, the same
code the simulator runs: a pod whose day clearly runs late (or early) is booked at its
forecast shifted, so the planner's moves, the guard's forecast checks and the next
placements see the day as it runs. New pods are booked at the lag most measured
services agree on (`arrival`, through `Extender.arrival_view`). The load guard owns one
and calls it from its report handler and its slot step (extender/guard.py).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

from gsched.agents.model import Report
from gsched.scheduler.policies.rephase import Rephasing
from gsched.scheduler.policies.state import ClusterState

if TYPE_CHECKING:
    from gsched.scheduler.extender.pods import PodJob
    from gsched.scheduler.extender.verbs import Extender

PodKey = tuple[str, str]  # (namespace, name)


class LiveRephaser:
    """Slot means of each pod's measured usage, and the re-phasing they drive."""

    def __init__(self, window: int = 8, max_lag: int = 8) -> None:
        self.rephasing = Rephasing(window, max_lag)
        #: pod -> absolute slot number (time // slot length) -> [sum of samples, count]
        self.usage: dict[PodKey, dict[int, list[float]]] = {}

    def observe(self, report: Report, slot_seconds: float) -> None:
        """Add a report's per-pod samples (a pod on several GPUs: the mean per GPU)."""
        keep = self.rephasing.window + 1
        for s in report.workloads:
            if not s.pod:
                continue
            b = self.usage.setdefault((s.namespace, s.pod), {})
            for t, u in zip(s.t, s.util, strict=True):
                acc = b.setdefault(int(t // slot_seconds), [0.0, 0])
                acc[0] += u
                acc[1] += 1
            newest = max(b)
            for k in [k for k in b if k < newest - keep]:
                del b[k]

    def arrival(self, ext: Extender, pj: PodJob) -> PodJob:
        """A pod not yet placed, booked at the cluster's lag (`Extender.arrival_view`):
        a new service shares GPUs on the same footing as services already booked late."""
        if not self.rephasing.cluster_lag or pj.uid in ext.placed:
            return pj
        job = self.rephasing.arrival_view(pj.job, ext.state.slots)
        return pj if job is pj.job else dataclasses.replace(pj, job=job)

    def on_slot(self, state: ClusterState, pods: dict[str, PodKey]) -> int:
        """At a slot change (`state.now` in the new slot; lock held): re-book the running
        inference pods (`pods`: uid -> namespace/name) whose measured day says so.
        Returns how many bookings moved."""
        rp = self.rephasing
        now_slot = int(state.now // state.slot_seconds)
        window = np.arange(now_slot - rp.window, now_slot)
        idx = window % state.slots
        moved = 0
        fresh = []
        for uid, r in list(state.running.items()):
            key = pods.get(uid)
            if r.job.kind != "inference" or r.job.profile is None or key is None:
                continue
            b = self.usage.get(key)
            if b is None or any(int(k) not in b for k in window):
                fresh.append(uid)  # not a whole window measured yet
                continue
            measured = np.array([b[int(k)][0] / b[int(k)][1] for k in window])
            moved += rp.update(state, uid, measured, idx)
        lag = rp.settle()  # the cluster's day, for pods too new for their own
        moved += sum(rp.adopt(state, uid, lag) for uid in fresh)
        rp.forget(set(state.running))
        live = set(pods.values())
        for key in [k for k in self.usage if k not in live]:
            del self.usage[key]
        return moved
