"""The leader's re-plan loop: CP-SAT over running and pending pods, followed by tidal.

Every `every_s`, and at the next step after a large change (the pods the extender knows
grew or shrank by a quarter, or the load guard closed GPUs), the leader hands the
running pods (inference fixed where it runs, preemptible training movable at the cost
of a move) and the pending pods to `packing.replan.replan`, with a move budget. The
plan becomes data on `ClusterState.plan` (pod uid -> node, GPUs), which the `tidal`
policy's filter/prioritize/bind prefer, its online score being the fallback for pods the
plan has not seen. The training pods the plan moves are evicted through the Eviction API
(PDBs and grace periods honoured); their controller's new pod has a new uid, so targets
are also kept per workload and handed to the new pod when it shows up pending.

This is the simulator's `simulator/replan.py` loop on wall-clock time. Counted in
`gsched_replans_total`, `gsched_replan_moves_total`, `gsched_plan_age_seconds` and
`gsched_plan_gap_ratio`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from gsched.scheduler.extender.periodic import PeriodicStep
from gsched.scheduler.extender.verbs import Extender
from gsched.scheduler.packing.replan import WorkItem, replan, window_load

log = logging.getLogger(__name__)

Evict = Callable[[str, str], None]


class LeaderReplanner(PeriodicStep):
    """See the module docstring; `step()` is one pass, `start()` runs it on a thread."""

    thread_name = "gsched-replanner"

    def __init__(self, extender: Extender, evict: Evict | None, *,
                 is_leader: Callable[[], bool] = lambda: True, every_s: float = 900.0,
                 move_budget: int = 4, time_limit: float = 2.0, window: int = 8,
                 max_pending: int = 256, clock: Callable[[], float] = time.time) -> None:
        self.extender = extender
        self.evict = evict
        self.is_leader = is_leader
        self.every_s = every_s
        self.move_budget = move_budget
        self.time_limit = time_limit
        self.window = window
        self.max_pending = max_pending
        self.clock = clock
        self.workload_targets: dict[str, tuple[int, tuple[int, ...]]] = {}
        self._last: float | None = None
        self._last_size = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _due(self, now: float, size: int) -> bool:
        if self._last is None or now - self._last >= self.every_s:
            return True
        return (abs(size - self._last_size) > max(4, self._last_size // 4)
                or bool(self.extender.state.blocked.any()))

    def adopt_pending(self) -> int:
        """Hand workload targets to pending pods the plan has not seen (a moved pod's
        replacement); returns how many were adopted."""
        ext = self.extender
        n = 0
        with ext.lock:
            for uid, pj in list(ext._pending.items()):
                target = self.workload_targets.get(pj.workload)
                if target is not None and uid not in ext.state.plan:
                    ext.state.plan[uid] = target
                    n += 1
        return n

    def step(self) -> list[tuple[str, str]]:
        """Re-plan if due and leading; returns the (namespace, name) pods moved."""
        ext = self.extender
        now = self.clock()
        m = ext.metrics
        if self._last is not None:
            m.plan_age.set(now - self._last)
        if not self.is_leader():
            return []
        self.adopt_pending()
        with ext.lock:
            st = ext.state
            size = len(ext.placed) + len(ext._pending)
            if not self._due(now, size):
                return []
            st.now = now
            slot, slots = st.current_slot, st.slots
            running, pending = [], []
            for uid, r in st.running.items():
                if not r.job.num_gpu or uid not in ext.placed:
                    continue
                load = (window_load(r.job, slots, slot, self.window) if r.job.preemptible
                        else r.load)
                running.append(WorkItem(r.job, load, (st.node_names[r.placement.node],
                                                      tuple(r.placement.gpus))))
            for uid, pj in list(ext._pending.items())[: self.max_pending]:
                j = pj.job
                if not j.num_gpu or uid in st.running:
                    continue
                load = (window_load(j, slots, slot, self.window) if j.preemptible
                        else j.load_profile(slots))
                pending.append(WorkItem(j, load))
            cluster = st.cluster
            headroom = ext.policy.config.headroom
        if not running and not pending:
            return []
        plan = replan(running, pending, cluster, headroom, self.move_budget, self.time_limit)
        m.replans.labels(outcome=plan.status).inc()
        self._last, self._last_size = now, size
        m.plan_age.set(0.0)
        if plan.status != "ok":
            log.warning("re-plan found no feasible plan for %d running + %d pending pods",
                        len(running), len(pending))
            return []
        m.plan_gap.set(plan.gap)
        moved: list[tuple[str, str]] = []
        with ext.lock:
            st = ext.state
            st.plan = {uid: (st.node_index[node], gpus) for uid, (node, gpus)
                       in plan.targets.items() if node in st.node_index}
            self.workload_targets = {ext.placed[u].workload: st.plan[u] for u in plan.moves
                                     if u in ext.placed and u in st.plan}
            victims = [(ext.placed[u].namespace, ext.placed[u].name) for u in plan.moves
                       if u in ext.placed][: self.move_budget]
        for ns, name in victims if self.evict is not None else []:
            try:
                self.evict(ns, name)
            except Exception as e:  # a PDB said no: it stays, the next plan sees it
                log.warning("re-plan: moving %s/%s: %s", ns, name, e)
                continue
            m.replan_moves.inc()
            moved.append((ns, name))
        log.info("re-plan: %d running + %d pending pods on %d GPUs, %d moved (%.2f s)",
                 len(running), plan.planned_queued, plan.gpus, len(moved), plan.seconds)
        return moved
