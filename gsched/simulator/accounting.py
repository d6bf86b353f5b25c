"""Time integrals of cluster figures between simulator events.

Utilisation and SLO risk depend on the time of day (profiles), so they are kept per
slot: `util_by_slot[t]` is the cluster's summed GPU utilisation if slot t were now, and
integrating from t0 to t1 weights each slot by how long the interval spends in it.
Everything is updated incrementally when GPUs change, never recomputed cluster-wide.
"""

from __future__ import annotations

import numpy as np

from gsched.models import DAY_SECONDS
from gsched.scheduler.policies.state import EPS, ClusterState


def slot_durations(t0: float, t1: float, slots: int) -> np.ndarray:
    """Seconds that [t0, t1) spends in each time-of-day slot."""
    length = DAY_SECONDS / slots
    out = np.zeros(slots)
    span = t1 - t0
    if span <= 0:
        return out
    days = int(span // DAY_SECONDS)
    if days:
        out += days * length
    a = t0 % DAY_SECONDS
    b = a + (span - days * DAY_SECONDS)
    edges = np.arange(slots) * length
    for lo, hi in ((a, min(b, DAY_SECONDS)), (0.0, b - DAY_SECONDS)):
        if hi > lo:
            out += np.clip(np.minimum(hi, edges + length) - np.maximum(lo, edges), 0.0, None)
    return out


class Accounting:
    """Running sums for one simulation; see the module docstring."""

    def __init__(self, state: ClusterState, actual: np.ndarray) -> None:
        self.state = state
        self.actual = actual  # (nodes, gpus, slots) actual load
        self.slots = state.slots
        self.slot_len = DAY_SECONDS / state.slots
        self.total_gpus = max(state.total_gpus, 1)
        self.gpu_price = np.repeat(state.node_price[:, None], state.max_gpus, axis=1)
        self._node_price: list[float] = state.node_price.astype(np.float64).tolist()
        self.alloc_now = 0.0
        self.occupied_now = 0
        self.cost_rate = 0.0  # USD per second
        self.util_by_slot = np.zeros(self.slots)
        self.over_by_slot = np.zeros(self.slots)
        # integrals
        self.last_t: float | None = None
        self.alloc_s = 0.0
        self.util_s = 0.0
        self.occupied_s = 0.0
        self.risk_s = 0.0
        self.cost = 0.0
        self.slot_time = np.zeros(self.slots)
        self.slot_util = np.zeros(self.slots)
        self.peak_occupied = 0
        self.timeline: list[tuple[float, float, float]] = []
        self._last_sample = -np.inf
        self._zeros = np.zeros(self.slots)

    def _contrib(self, n: int, gpus: list[int]) -> tuple | None:
        """What GPUs `gpus` of node n add to the running sums; None when they are empty.

        An empty GPU adds exactly nothing (its free share, load and counts are reset to
        exact zeros), so the common start on empty GPUs, or finish that empties them,
        skips computing that side; `after_change` adds the other side as it is, which
        is the same floating-point result as subtracting zeros.
        """
        st = self.state
        if len(gpus) == 1:  # the common case, without fancy indexing
            g = gpus[0]
            # `.item` reads a Python scalar (no numpy scalar built and compared)
            if not st.jobs_on_gpu.item(n, g):
                return None
            row = self.actual[n, g]
            over = ((row > 1.0 + EPS).astype(np.float64) if st.inference_on_gpu.item(n, g)
                    else self._zeros)
            a = 1.0 - st.free.item(n, g)
            return (0.0 if a < 0.0 else 1.0 if a > 1.0 else a, 1, self._node_price[n],
                    np.minimum(row, 1.0), over)
        occ = st.jobs_on_gpu[n, gpus] > 0
        if not np.count_nonzero(occ):  # whole-GPU jobs start on, and leave, empty GPUs
            return None
        alloc = float(np.clip(1.0 - st.free[n, gpus], 0.0, 1.0).sum())
        rows = self.actual[n, gpus, :]
        util = np.minimum(rows, 1.0).sum(axis=0)
        inf = (st.inference_on_gpu[n, gpus] > 0)[:, None]
        over = ((rows > 1.0 + EPS) & inf).sum(axis=0)
        return alloc, int(occ.sum()), float(self.gpu_price[n, gpus][occ].sum()), util, over

    def before_change(self, n: int, gpus: list[int]) -> tuple | None:
        return self._contrib(n, gpus) if gpus else ()

    def after_change(self, n: int, gpus: list[int], before: tuple | None) -> None:
        if not gpus:
            return
        after = self._contrib(n, gpus)
        if before is None:  # started on an empty GPU: the sums gain `after` as it is
            if after is None:
                return
            a1, o1, p1, u1, r1 = after
            self.alloc_now += a1
            self.occupied_now += o1
            self.cost_rate += p1 / 3600.0
            self.util_by_slot += u1
            if r1 is not self._zeros:
                self.over_by_slot += r1
        elif after is None:  # emptied the GPU: the sums lose `before` as it was
            a0, o0, p0, u0, r0 = before
            self.alloc_now += 0.0 - a0
            self.occupied_now -= o0
            self.cost_rate += (0.0 - p0) / 3600.0
            self.util_by_slot -= u0
            if r0 is not self._zeros:
                self.over_by_slot -= r0
        else:
            a1, o1, p1, u1, r1 = after
            a0, o0, p0, u0, r0 = before
            self.alloc_now += a1 - a0
            self.occupied_now += o1 - o0
            self.cost_rate += (p1 - p0) / 3600.0
            self.util_by_slot += u1 - u0
            if r1 is not self._zeros or r0 is not self._zeros:  # no inference: no change
                self.over_by_slot += r1 - r0
        self.peak_occupied = max(self.peak_occupied, self.occupied_now)

    def advance(self, t: float) -> None:
        """Integrate every figure from the last call up to `t`."""
        if self.last_t is None:
            self.last_t = t
            return
        t0 = self.last_t
        dt = t - t0
        if dt <= 0:
            return
        s0 = int((t0 % DAY_SECONDS) // self.slot_len)
        if dt <= (s0 + 1) * self.slot_len - (t0 % DAY_SECONDS):
            self.util_s += dt * self.util_by_slot[s0]
            self.risk_s += dt * self.over_by_slot[s0]
            self.slot_time[s0] += dt
            self.slot_util[s0] += dt * self.util_by_slot[s0]
        else:
            dur = slot_durations(t0, t, self.slots)
            self.util_s += float(dur @ self.util_by_slot)
            self.risk_s += float(dur @ self.over_by_slot)
            self.slot_time += dur
            self.slot_util += dur * self.util_by_slot
        self.alloc_s += dt * self.alloc_now
        self.occupied_s += dt * self.occupied_now
        self.cost += dt * self.cost_rate
        self.last_t = t
        self._sample(t0, t)

    def _sample(self, t0: float, t1: float) -> None:
        """Timeline points for the plot: at most one per slot, at slot boundaries too.

        The state does not change between events, but utilisation follows the profiles,
        so a quiet stretch is sampled at each slot it crosses (exact, not interpolated).
        """
        if t1 - self._last_sample < self.slot_len:  # the common case: nothing to add
            return
        start = max(self._last_sample + self.slot_len, t0)
        first = np.ceil(start / self.slot_len) * self.slot_len
        bounds = np.arange(first, t1, self.slot_len)
        if len(bounds) > 4 * self.slots:  # a long idle stretch: thin to 4 days' worth
            bounds = bounds[:: int(np.ceil(len(bounds) / (4 * self.slots)))]
        alloc = self.alloc_now / self.total_gpus
        for b in bounds:
            slot = int((b % DAY_SECONDS) // self.slot_len)
            self.timeline.append((float(b), alloc, self.util_by_slot[slot] / self.total_gpus))
            self._last_sample = float(b)
        if t1 - self._last_sample >= self.slot_len:
            slot = int((t1 % DAY_SECONDS) // self.slot_len)
            self.timeline.append((t1, alloc, self.util_by_slot[slot] / self.total_gpus))
            self._last_sample = t1
