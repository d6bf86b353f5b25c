"""Which waiting groups are worth retrying: the simulator's shortcut for queue passes.

After a finish the engine retries every waiting group (jobs that fit the same places).
For request-view policies (feasibility is a node's free resources and nothing else, as
for every policy but `tidal`) a group whose head missed can only fit on a node released
since: every other node has only lost capacity. So a retry first looks at those nodes
(usually one or two, not the cluster), and the full placement runs only when one fits.
The shortcut never changes an answer; it only skips placements certain to miss.
"""

from __future__ import annotations

import numpy as np

from gsched.models import Job
from gsched.scheduler.policies.policy import Policy
from gsched.scheduler.policies.state import EPS, ClusterState


class RetryFilter:
    """Misses per group and releases per node, for one simulation."""

    def __init__(self, state: ClusterState, policy: Policy) -> None:
        self.state, self.policy = state, policy
        self.active = (type(policy).feasible is Policy.feasible
                       and type(policy).filter is Policy.filter)
        self.released: list[int] = []  # node of every release, in order
        self.missed_at: dict[tuple, int] = {}  # group -> len(released) at its last miss

    def note_release(self, node: int) -> None:
        if self.active:
            self.released.append(node)

    def note_miss(self, key: tuple) -> None:
        if self.active:
            self.missed_at[key] = len(self.released)

    def note_fit(self, key: tuple) -> None:
        self.missed_at.pop(key, None)

    def may_fit(self, key: tuple, job: Job) -> bool:
        """Could the group's head fit now? False only when certain."""
        since = self.missed_at.get(key)
        if since is None:
            return True
        if since == len(self.released):
            return False
        reserve = self.policy.reservation(job)
        fresh = set(self.released[since:])
        self.missed_at[key] = len(self.released)
        if job.num_gpu:
            # A necessary condition first, one number per node: enough GPUs with the free
            # share the job reserves (fit_mask demands it too): the need-th largest share.
            if job.num_gpu > self.state.max_gpus:
                return False
            st = self.state
            col, floor = st.kth_free[job.num_gpu - 1], reserve - EPS
            item = col.item  # a Python float per node, no numpy scalar
            if not any(item(n) >= floor for n in fresh):
                return False
            if (not job.cpu_milli and not job.memory_mib and not job.gpu_mem_mib
                    and not np.count_nonzero(st.blocked)):
                # GPU share alone decides (`fit_mask`'s common case): the test above was
                # the whole answer but for the job's static mask (GPU model and count)
                static = st.static_mask(job).item
                return any(static(n) and item(n) >= floor for n in fresh)
        nodes = np.fromiter(fresh, dtype=np.int64)
        return bool(np.count_nonzero(self.state.fit_mask(job, reserve, nodes)))
