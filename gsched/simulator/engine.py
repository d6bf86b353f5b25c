"""Trace-driven discrete-event simulator.

The core is a heap of timestamped events ordered by (time, kind, sequence) and a loop
that advances the clock; arrivals are merged in from the time-sorted trace so a million
jobs never sit in the heap at once. Placement is entirely the policy's
(`gsched.scheduler.policy.place`, the same call the extender makes); the simulator only
keeps time, queues jobs that do not fit, preempts by priority, moves training out when a
policy asks (`Policy.on_slot`), and accounts.

Events: arrival, finish, preemption/eviction, time-of-day slot change (only for policies
that act on it), end of trace. Training progresses at a rate set by colocation
interference on its GPUs (Lucid fit, `colocation.py`), so its finish time moves when a
neighbour arrives or leaves.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, Field

from gsched.models import DAY_SECONDS, Cluster, Job, Trace
from gsched.scheduler.policies.policy import Policy, place
from gsched.scheduler.policies.preemption import find_victims
from gsched.scheduler.policies.state import ClusterState, Placement, gpu_index
from gsched.simulator.accounting import Accounting
from gsched.simulator.colocation import BUILTIN, ColocationModel
from gsched.simulator.gc_pause import collector_paused
from gsched.simulator.guard import GuardConfig
from gsched.simulator.load import LoadDeviation
from gsched.simulator.loop import make_hooks
from gsched.simulator.results import SimResult, result_of
from gsched.simulator.retry import RetryFilter

FINISH, SLOT, HOOK = 0, 1, 2


class SimConfig(BaseModel):
    """Simulation knobs; the defaults are documented in docs/architecture.md."""

    checkpoint_interval_s: float = Field(default=1800.0, gt=0,
                                         description="training checkpoints this often")
    restart_overhead_s: float = Field(default=120.0, ge=0,
                                      description="checkpoint + restart cost of a move")
    preemption: bool = True
    until_s: float | None = Field(default=None, gt=0, description="stop the clock here")
    deviation: LoadDeviation = Field(default_factory=LoadDeviation)
    #: keep every start and stop (time, job, node, GPUs) in `SimResult.placements`:
    #: what `gsched simulate --placements` writes, to compare with a real cluster
    record_placements: bool = False
    # the tidal loop (issue 13; simulator/loop.py): load guard, promised window, re-plans
    guard: GuardConfig | None = None
    replan_every_s: float | None = Field(default=None, gt=0,
                                         description="re-plan with CP-SAT this often")


@dataclass
class _Run:
    job: Job
    remaining: float  # work left, in seconds at full speed (inf: runs to the end)
    rate: float = 1.0
    last_update: float = 0.0
    version: int = 0
    first_start: float | None = None
    run_start: float = 0.0
    actual: np.ndarray | None = None
    source: Job | None = None  # the trace's job, where a hook booked it otherwise
    waiting: bool = False  # in a queue group (lazily deleted when started elsewhere)


class Simulation:
    """One policy over one trace on one cluster."""

    def __init__(self, trace: Trace, cluster: Cluster, policy: Policy,
                 config: SimConfig | None = None,
                 colocation: ColocationModel = BUILTIN) -> None:
        self.trace, self.cluster, self.policy = trace, cluster, policy
        self.config = config or SimConfig()
        self.coloc = colocation
        self.state = ClusterState(cluster, trace.slots)
        dev = self.config.deviation
        self.actual = np.zeros_like(self.state.load) if dev.active else self.state.load
        self.acct = Accounting(self.state, self.actual)
        self.heap: list[tuple[float, int, int, object]] = []
        self.seq = 0
        self.runs: dict[str, _Run] = {}
        # Jobs per GPU as insertion-ordered dicts, not sets: string hashing differs per
        # process, and the order jobs are re-rated in orders their finish events.
        self.on_gpu: dict[tuple[int, int], dict[str, None]] = {}
        self.groups: dict[tuple, list[tuple[tuple, int, _Run]]] = {}
        self.dirty_groups: set[tuple] = set()
        self.queued = 0
        self.now = 0.0
        self.events = 0
        # outcomes
        self.queue_delays: list[float] = []
        self.training_queue_delays: list[float] = []
        self.jcts: list[float] = []
        self.completed = {"training": 0, "inference": 0}
        self.last_training_end: float | None = None
        self.preemptions = 0
        self.planned_moves = 0
        self.lost_gpu_s = 0.0
        self.unschedulable: list[str] = []
        self.warnings: list[str] = []
        self.uses_slots = type(policy).on_slot is not Policy.on_slot
        self.running_finite = 0
        self.placements: list[tuple[float, str, str, str, tuple[int, ...]]] = []
        self.retry = RetryFilter(self.state, policy)  # skips retries certain to miss
        self.victim_orders: dict[int, tuple] = {}  # find_victims' per-node cache
        self.flat_loads: dict[tuple | None, np.ndarray] = {}  # `_predicted`'s shared ones
        self.hooks = make_hooks(self)  # the tidal loop: guard reports, re-plans

    # ------------------------------------------------------------------ events
    def _push(self, t: float, kind: int, payload: object) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, kind, self.seq, payload))

    def _schedule_finish(self, run: _Run) -> None:
        run.version += 1
        if math.isfinite(run.remaining):
            t = self.now + run.remaining / max(run.rate, 1e-9)
            self._push(t, FINISH, (run.job.id, run.version))

    # ------------------------------------------------------------------ placing
    def _start(self, run: _Run, placement: Placement) -> None:
        job, st = run.job, self.state
        n, gpus = placement.node, list(placement.gpus)
        idx = gpu_index(placement.gpus)  # (the kernels' form, built once per change)
        before = self.acct.before_change(n, idx)
        predicted = self._predicted(job)
        st.allocate(job, placement, predicted)
        if self.config.record_placements:
            self.placements.append((self.now, "start", job.id, st.node_names[n],
                                    tuple(gpus)))
        if self.actual is not st.load:
            src = run.source  # the load really comes from the trace's job
            run.actual = self.config.deviation.actual_load(
                src or job, predicted if src is None else src.load_profile(st.slots))
            self.actual[n, gpus, :] += run.actual
        self.acct.after_change(n, idx, before)
        if run.first_start is None:
            run.first_start = self.now
            self.queue_delays.append(self.now - job.submit_time)
            if job.kind == "training":
                self.training_queue_delays.append(self.now - job.submit_time)
        run.run_start = self.now
        run.last_update = self.now
        for g in gpus:
            self.on_gpu.setdefault((n, g), {})[job.id] = None
        self._update_rates(n, gpus, exclude=job.id)
        run.rate = self._rate_of(job) if job.kind == "training" else 1.0
        self._schedule_finish(run)
        if math.isfinite(run.remaining):
            self.running_finite += 1

    def _predicted(self, job: Job) -> np.ndarray:
        """The job's expected load per GPU and slot (`Job.load_profile`). Flat profiles
        (training, GPU-less jobs) are shared between the jobs of one level: nothing
        writes into a placed job's load, the state only adds and subtracts it."""
        if job.profile is not None:
            return job.load_profile(self.state.slots)
        key = (job.gpu_share, job.utilization) if job.num_gpu else None
        load = self.flat_loads.get(key)
        if load is None:
            load = self.flat_loads[key] = (job.load_profile(self.state.slots) if job.num_gpu
                                           else np.zeros(self.state.slots))
        return load

    def _stop(self, run: _Run) -> None:
        job, st = run.job, self.state
        r = st.running[job.id]
        n, gpus = r.placement.node, list(r.placement.gpus)
        idx = gpu_index(r.placement.gpus)
        before = self.acct.before_change(n, idx)
        st.release(job.id)
        if self.config.record_placements:
            self.placements.append((self.now, "stop", job.id, st.node_names[n],
                                    tuple(gpus)))
        self.retry.note_release(n)
        if self.actual is not st.load and run.actual is not None:
            self.actual[n, gpus, :] -= run.actual
            empty = st.jobs_on_gpu[n, gpus] == 0
            if empty.any():
                self.actual[n, np.array(gpus)[empty], :] = 0.0
        self.acct.after_change(n, idx, before)
        for g in gpus:
            self.on_gpu[(n, g)].pop(job.id, None)
        self._progress(run)
        run.version += 1  # invalidates its pending finish
        if math.isfinite(run.remaining):
            self.running_finite -= 1
        self._update_rates(n, gpus)

    def _progress(self, run: _Run) -> None:
        if math.isfinite(run.remaining):
            run.remaining = max(run.remaining - (self.now - run.last_update) * run.rate, 0.0)
        run.last_update = self.now

    def _rate_of(self, job: Job) -> float:
        """Speed of a running training job: the slowest of its GPUs (Lucid colocation fit)."""
        st = self.state
        r = st.running[job.id]
        rate = 1.0
        n, count = r.placement.node, st.jobs_on_gpu.item
        for g in r.placement.gpus:
            if count(n, g) > 1:
                u = float(self.actual[n, g].mean())
                rate = min(rate, self.coloc.speed(u))
        return rate

    def _update_rates(self, n: int, gpus: list[int], exclude: str | None = None) -> None:
        """Re-rate the training jobs on these GPUs after a neighbour came or went."""
        ids: dict[str, None] = {}
        for g in gpus:
            ids.update(self.on_gpu.get((n, g), {}))
        for jid in ids:
            run = self.runs[jid]
            if jid == exclude or run.job.kind != "training":
                continue
            rate = self._rate_of(run.job)
            if rate != run.rate:
                self._progress(run)
                run.rate = rate
                self._schedule_finish(run)

    # ------------------------------------------------------------------ queue
    def _enqueue(self, run: _Run) -> None:
        key = self.policy.fit_key(run.job)
        self.seq += 1
        heapq.heappush(self.groups.setdefault(key, []),
                       (self.policy.queue_key(run.job), self.seq, run))
        self.dirty_groups.add(key)
        self.queued += 1
        run.waiting = True

    def _schedule_pass(self, full: bool) -> bool:
        """Try waiting jobs, group by group (all groups, or those with new arrivals).

        Jobs in one group fit the same places, so after one fails the rest of its group
        is skipped: a pass costs O(groups + placements), not O(queue).
        """
        groups, heappop = self.groups, heapq.heappop
        keys = list(groups) if full else [k for k in self.dirty_groups if k in groups]
        self.dirty_groups.clear()
        live = []
        for key in keys:  # drop stale heads so groups are ordered by live jobs
            heap = groups[key]
            while heap and not heap[0][2].waiting:
                heappop(heap)
            if heap:
                live.append(key)
            else:
                del groups[key]
        if len(live) > 1:
            live.sort(key=lambda k: groups[k][0][:2])
        placed_any = False
        may_fit, policy, state = self.retry.may_fit, self.policy, self.state
        for key in live:
            heap = groups[key]
            while heap:
                run = heap[0][2]
                if not run.waiting:  # started by preemption since it was queued
                    heappop(heap)
                    continue
                if not may_fit(key, run.job):
                    break
                state.now = self.now
                decision = place(policy, state, run.job, explain=False)
                if type(decision) is not Placement:
                    self.retry.note_miss(key)
                    break
                self.retry.note_fit(key)
                heappop(heap)
                self._dequeue(run)
                self._start(run, decision)
                placed_any = True
            if not heap:
                del groups[key]
        return placed_any

    def _try_preempt(self, run: _Run) -> bool:
        job = run.job
        if not self.config.preemption or job.preemptible or job.num_gpu == 0:
            return False
        found = find_victims(self.policy, self.state, job,
                             lambda j: self.runs[j].run_start, self.victim_orders)
        if found is None:
            return False
        node, victims = found
        for jid in victims:
            self._evict(self.runs[jid], planned=False)
        self.state.now = self.now
        if not self.policy.feasible(self.state, job)[node]:  # pragma: no cover - guarded
            return False
        gpus = self.policy.choose_gpus(self.state, job, node)
        self._dequeue(run)
        self._start(run, Placement(node, gpus, self.policy.reservation(job)))
        return True

    def _dequeue(self, run: _Run) -> None:
        """Mark a waiting job as no longer waiting; its heap entry is dropped lazily."""
        run.waiting = False
        self.queued -= 1

    def _evict(self, run: _Run, planned: bool) -> None:
        """Checkpoint (planned) or preempt (unplanned) a running job and queue it again."""
        job = run.job
        self._stop(run)
        overhead = self.config.restart_overhead_s
        lost = overhead
        if not planned:
            since_ckpt = (self.now - run.run_start) % self.config.checkpoint_interval_s
            lost += since_ckpt
            if math.isfinite(run.remaining):
                run.remaining += since_ckpt * run.rate
        if math.isfinite(run.remaining):
            run.remaining += overhead
        self.lost_gpu_s += lost * job.gpu_request
        self.preemptions += 1
        self.planned_moves += int(planned)
        self._enqueue(run)

    # ------------------------------------------------------------------ main loop
    def run(self, progress: Callable[[int], None] | None = None) -> SimResult:
        """Replay the trace, the cycle collector paused meanwhile (`gc_pause`)."""
        with collector_paused():
            return self._replay(progress)

    def _replay(self, progress: Callable[[int], None] | None) -> SimResult:
        wall0 = time.perf_counter()
        jobs = self.trace.jobs
        i, n_jobs = 0, len(jobs)
        until = self.config.until_s
        start = jobs[0].submit_time if jobs else 0.0
        self.now = start
        self.acct.advance(start)
        if self.uses_slots:
            slot_len = self.state.slot_seconds
            self._push((math.floor(start / slot_len) + 1) * slot_len, SLOT, None)
        for k, hook in enumerate(self.hooks):
            self._push(hook.first_time(start), HOOK, k)
        idle_slots = 0
        tick = 0
        # the hot loop's names, looked up once (the heap list is never rebound)
        heap, heappop, inf = self.heap, heapq.heappop, math.inf
        state, runs, running = self.state, self.runs, self.state.running
        static_mask, advance = state.static_mask, self.acct.advance
        while True:
            t_heap = heap[0][0] if heap else inf
            t_arr = jobs[i].submit_time if i < n_jobs else inf
            t = t_heap if t_heap < t_arr else t_arr
            if t == inf:
                break
            if until is not None and t > start + until:
                self.now = start + until
                self.acct.advance(self.now)
                break
            if i >= n_jobs and self.running_finite == 0:
                # Nothing left will free capacity; only the clock (slots) could help.
                if not self.queued or not self.uses_slots or idle_slots > self.state.slots:
                    break
            self.now = t
            state.now = t
            advance(t)
            freed = False
            slot_event = False
            while heap and heap[0][0] == t:
                _, kind, _, payload = heappop(heap)
                self.events += 1
                if kind == FINISH:
                    jid, version = payload
                    run = runs.get(jid)
                    if run is None or run.version != version or jid not in running:
                        continue
                    self._stop(run)
                    self._complete(run)
                    freed = True
                elif kind == HOOK:  # the tidal loop: guard reports, re-plans
                    hook = self.hooks[payload]
                    freed |= hook.fire(self, t)
                    self._push(hook.next_time(t), HOOK, payload)
                else:
                    slot_event = True
                    slot = int((t % DAY_SECONDS) // self.state.slot_seconds)
                    for hook in self.hooks:  # before moves and the queue see the new slot
                        hook.on_slot(self)
                    for jid in self.policy.on_slot(self.state, slot, t):
                        run = self.runs.get(jid)
                        if (run is not None and jid in self.state.running and run.job.preemptible
                                and all(h.may_move(self, run, t) for h in self.hooks)):
                            self._evict(run, planned=True)
                            freed = True
                    self._push(t + self.state.slot_seconds, SLOT, None)
            arrived: list[_Run] = []
            while i < n_jobs and jobs[i].submit_time == t:
                job = jobs[i]
                i += 1
                self.events += 1
                if not static_mask(job).any():
                    self.unschedulable.append(job.id)
                    continue
                dur = job.duration if job.duration is not None else inf
                src = job
                for hook in self.hooks:  # re-phasing books a new service at the cluster's lag
                    job = hook.admit(self, job)
                run = _Run(job=job, remaining=dur, source=None if job is src else src)
                runs[job.id] = run
                self._enqueue(run)
                arrived.append(run)
            placed = self._schedule_pass(full=freed or (slot_event and self.policy.profile_aware))
            for run in arrived:
                if run.job.id not in running and self._try_preempt(run):
                    placed = True
            idle_slots = 0 if (placed or i < n_jobs) else idle_slots + int(slot_event)
            tick += 1
            if progress is not None and tick % 2048 == 0:
                progress(i)
        # The clock stops at --until when given; a trace of open-ended services only is
        # scored over one day so its figures are defined.
        end = start + until if until is not None else (
            self.now if self.now > start else start + DAY_SECONDS)
        if end > self.now:
            self.now = self.state.now = end
            self.acct.advance(end)
        if progress is not None:
            progress(n_jobs)
        return self._result(start, time.perf_counter() - wall0)

    def _result(self, start: float, wall: float) -> SimResult:
        return result_of(self, start, wall)

    def _complete(self, run: _Run) -> None:
        job = run.job
        self.completed[job.kind] += 1
        if job.kind == "training":
            self.jcts.append(self.now - job.submit_time)
            self.last_training_end = self.now

def simulate(trace: Trace, cluster: Cluster, policy: Policy, config: SimConfig | None = None,
             colocation: ColocationModel = BUILTIN,
             progress: Callable[[int], None] | None = None) -> SimResult:
    """Replay `trace` on `cluster` under `policy`."""
    return Simulation(trace, cluster, policy, config, colocation).run(progress)
