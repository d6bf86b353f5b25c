"""The `tidal` policy: colocate by daily load profile, move training out before peaks.

Request-based policies book a job's request all day. `tidal` books its *load profile*:
a GPU takes a job when the summed expected load stays under `1 - headroom` (see
`online.py` for exactly which slots count). So two half-GPU services whose peaks are
twelve hours apart share one GPU, although their requests add up to more than it has
(`state.free` may go negative under this policy; metrics clip it).

Preemptible training runs in the valleys: it only has to fit the next few slots, and at
every slot change `on_slot` looks at the forecast for the slot about to start and
returns the training jobs to checkpoint and move out from GPUs whose predicted load
would exceed the usable capacity. The simulator counts each move's checkpoint/restart
cost, and the moved job queues again for a GPU that is in its valley.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict

import numpy as np

from gsched.models import Job
from gsched.scheduler.policies.online import LoadIndex, row_count
from gsched.scheduler.policies.plan_follow import plan_scores, planned_gpus
from gsched.scheduler.policies.policy import Policy, PolicyConfig
from gsched.scheduler.policies.state import EPS, ClusterState, Reason
from gsched.scheduler.policies.tidal_frag import GpuChoice, TimeFragmentation


class TidalPolicy(Policy):
    """Profile-aware placement (online.py) plus forecast-driven training moves."""

    name = "tidal"
    profile_aware = True
    #: slots a preemptible job must fit before it is worth starting (4 x 15 min)
    window = 4

    def __init__(self, config: PolicyConfig | None = None) -> None:
        super().__init__(config)
        self._indexes: weakref.WeakKeyDictionary[ClusterState, LoadIndex] = (
            weakref.WeakKeyDictionary())
        #: a few recent decisions' work, by `_key`: the extender serves several
        #: connections, so filter and prioritize of one pod may not be back to back
        self._memo: OrderedDict[tuple, tuple] = OrderedDict()
        self._fit_memo: OrderedDict[tuple, tuple] = OrderedDict()
        self.set_workload(self.config.workload)

    def set_workload(self, jobs: list[Job]) -> None:
        """Replace the target workload whose fragmentation the node score weighs."""
        self.frag = TimeFragmentation(jobs, self.config.headroom)
        self._memo = OrderedDict()

    def index(self, state: ClusterState) -> LoadIndex:
        idx = self._indexes.get(state)
        if idx is None:
            idx = LoadIndex(state, self.config.headroom, window=self.window,
                            inference_reserve=self.config.inference_reserve)
            self._indexes[state] = idx
        return idx

    def _key(self, state: ClusterState, job: Job) -> tuple:
        # the job object too: a re-read job may keep its id, not its load
        return (id(state), job.id, id(job), job.utilization, int(state.node_version.sum()),
                state.current_slot)

    def _fit(self, state: ClusterState, job: Job) -> tuple[np.ndarray, object]:
        """(feasible nodes, per-GPU fit) for the job: all that `filter` needs, memoised
        until the state or the slot moves. Kept apart from the scores, which cost more,
        so that the extender's filter verb does not pay for prioritize's work."""
        key = self._key(state, job)
        hit = _recall(self._fit_memo, key)
        if hit is not None:
            return hit
        index = self.index(state)
        mask = index.node_mask(job)
        fit = None
        if job.num_gpu:
            fit = index.fit(job, mask)
            mask = mask & (row_count(fit.ok) >= job.num_gpu)
        _keep(self._fit_memo, key, (mask, fit))
        return mask, fit

    def _evaluate(self, state: ClusterState, job: Job
                  ) -> tuple[np.ndarray, np.ndarray, GpuChoice]:
        """(feasible, scores, GPUs per node) for the job, memoised until the state or the
        slot moves (drivers ask `feasible`, `score` and `choose_gpus` for one decision)."""
        key = self._key(state, job)
        hit = _recall(self._memo, key)
        if hit is not None:
            return hit
        mask, fit = self._fit(state, job)
        scores, gpus = self.frag.node_scores(state, job, mask, fit)
        _keep(self._memo, key, (mask, scores, gpus))
        return mask, scores, gpus

    # -- the three questions ---------------------------------------------------
    def filter(self, state: ClusterState, job: Job) -> np.ndarray:
        if job.num_gpu:
            feasible = self._fit(state, job)[0]
            if feasible.all():  # feasible implies every check below passes
                return np.zeros(state.n_nodes, dtype=np.int8)
        if not job.num_gpu:
            return state.fit_reasons(job, -np.inf)  # model, CPU, RAM
        # feasible nodes pass every check (model, count, memory, CPU, RAM): only the
        # others are asked why (a few nodes, mostly)
        reasons = np.zeros(state.n_nodes, dtype=np.int8)
        bad = np.flatnonzero(~feasible)
        why = state.fit_reasons(job, -np.inf, bad)
        why[why == 0] = Reason.PROFILE
        reasons[bad] = why
        return reasons

    def feasible(self, state: ClusterState, job: Job) -> np.ndarray:
        return self._fit(state, job)[0]

    def fit_key(self, job: Job) -> tuple:
        return (job.shape_key(), job.preemptible, job.profile_name or id(job.profile),
                job.utilization)

    def score(self, state: ClusterState, job: Job, feasible: np.ndarray) -> np.ndarray:
        return plan_scores(state, job, self._evaluate(state, job)[1])  # plan first

    def choose_gpus(self, state: ClusterState, job: Job, node: int) -> tuple[int, ...]:
        if job.num_gpu == 0:
            return ()
        planned = (planned_gpus(state, job, node, lambda n: self._gpu_ok(state, job, n))
                   if state.plan else None)
        return planned if planned is not None else self._evaluate(state, job)[2][node]

    def _gpu_ok(self, state: ClusterState, job: Job, node: int) -> np.ndarray:
        """Per-GPU online fit of `job` on `node` (the plan is followed only where it fits)."""
        mask = np.zeros(state.n_nodes, dtype=bool)
        mask[node] = True
        return self.index(state).fit(job, mask).ok[node]

    # -- time ------------------------------------------------------------------
    def on_slot(self, state: ClusterState, slot: int, now: float) -> list[str]:
        """Preemptible jobs to move out of GPUs whose forecast for `slot` is over
        capacity minus headroom: newest first (least work since their start), until
        the forecast fits."""
        cap = np.where(state.forecast_on_gpu > 0, 1.0 - self.config.headroom, 1.0) + EPS
        over = state.load[:, :, slot] > cap
        over &= state.preemptible_load[:, :, slot] > EPS
        if not over.any():
            return []
        excess = np.where(over, state.load[:, :, slot] - cap, 0.0)
        out: list[str] = []
        for jid in reversed(list(state.running)):  # insertion order = start order
            r = state.running[jid]
            if not r.job.preemptible or not r.placement.gpus:
                continue
            n, gpus = r.placement.node, list(r.placement.gpus)
            if not (excess[n, gpus] > 0).any():
                continue
            if r.load[slot] <= EPS:
                continue
            out.append(jid)
            excess[n, gpus] -= r.load[slot]
        return out

    def queue_key(self, job: Job) -> tuple:
        """Priority, then largest peak first (first-fit-decreasing), then arrival."""
        return (-job.priority, -job.num_gpu * job.peak_load, job.submit_time, job.id)


#: how many recent decisions `TidalPolicy` keeps
MEMO_SIZE = 8


def _recall(memo: OrderedDict[tuple, tuple], key: tuple) -> tuple | None:
    hit = memo.get(key)
    if hit is not None:
        memo.move_to_end(key)
    return hit


def _keep(memo: OrderedDict[tuple, tuple], key: tuple, value: tuple) -> None:
    memo[key] = value
    while len(memo) > MEMO_SIZE:
        memo.popitem(last=False)
