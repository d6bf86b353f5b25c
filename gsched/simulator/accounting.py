"""Time integrals of cluster figures between simulator events.

Utilisation and SLO risk depend on the time of day (profiles), so they are kept per
slot: `util_by_slot[t]` is the cluster's summed GPU utilisation if slot t were now, and
integrating from t0 to t1 weights each slot by how long the interval spends in it.
Everything is updated incrementally when GPUs change, never recomputed cluster-wide:
a change's arithmetic is one compiled call before it and one after
(`accounting_kernels`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from gsched.models import DAY_SECONDS
from gsched.scheduler.policies.state import ClusterState, gpu_index

# The layout of the arrays the compiled kernels (`accounting_kernels`) update:
#: `sums[...]`: allocated share, occupied GPUs, cost rate (USD/s), peak occupied
ALLOC_NOW, OCCUPIED_NOW, COST_RATE, PEAK = 0, 1, 2, 3
#: `totals[...]`, the integrals over time: GPU-seconds allocated, utilised, occupied,
#: overloaded (inference SLO risk), and USD
ALLOC_S, UTIL_S, OCCUPIED_S, RISK_S, COST = 0, 1, 2, 3, 4
#: `by_slot[...]` rows (and a change side's `vecs` rows): utilisation, overload per slot
UTIL, OVER = 0, 1
#: a change side's `side[...]`: allocated share, occupied GPUs, price per hour, present
ALLOC, OCCUPIED, PRICE, PRESENT = 0, 1, 2, 3

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


class _Cell:
    """A read-only attribute that is one cell of an array attribute, as a Python number
    (`float` or `int`)."""

    def __init__(self, array: str, index: int, kind: type = float) -> None:
        self.array, self.index, self.kind = array, index, kind

    def __get__(self, obj: object, owner: type | None = None) -> Any:
        return self.kind(getattr(obj, self.array).item(self.index))


class Accounting:
    """Running sums for one simulation; see the module docstring."""

    def __init__(self, state: ClusterState, actual: np.ndarray) -> None:
        from gsched.simulator import accounting_kernels  # (numba: imported when first used)

        self._kernels = accounting_kernels
        self.state = state
        self.actual = actual  # (nodes, gpus, slots) actual load
        self.slots = state.slots
        self.slot_len = DAY_SECONDS / state.slots
        self.total_gpus = max(state.total_gpus, 1)
        self.node_price = state.node_price.astype(np.float64)
        #: the running sums a change moves (`accounting_kernels`: ALLOC_NOW, OCCUPIED_NOW,
        #: COST_RATE in USD per second, PEAK occupied), read through the cells below
        self.sums = np.zeros(4)
        #: per slot, the cluster's utilisation and overload if that slot were now
        self.by_slot = np.zeros((2, self.slots))
        self.util_by_slot, self.over_by_slot = self.by_slot[UTIL], self.by_slot[OVER]
        # one change at a time: its GPUs' contribution before it (0) and after (1)
        self._sides = np.zeros((2, 4))
        self._vecs = np.zeros((2, 2, self.slots))
        self._side0, self._vecs0 = self._sides[0], self._vecs[0]
        #: the integrals (`accounting_kernels`: ALLOC_S, UTIL_S, OCCUPIED_S, RISK_S, COST),
        #: read through the cells below
        self.totals = np.zeros(5)
        self.last_t: float | None = None
        #: per slot: seconds spent in it, and utilisation integrated over them
        self.slot_sums = np.zeros((2, self.slots))
        self.slot_time, self.slot_util = self.slot_sums[0], self.slot_sums[1]
        self.timeline: list[tuple[float, float, float]] = []
        self._last_sample = -np.inf

    # the kernels' running sums and integrals by name (read-only cells of the arrays)
    alloc_now = _Cell("sums", ALLOC_NOW)  # allocated GPU share now (over occupied GPUs)
    occupied_now = _Cell("sums", OCCUPIED_NOW, int)
    cost_rate = _Cell("sums", COST_RATE)  # USD per second of the occupied GPUs
    peak_occupied = _Cell("sums", PEAK, int)
    alloc_s = _Cell("totals", ALLOC_S)
    util_s = _Cell("totals", UTIL_S)
    occupied_s = _Cell("totals", OCCUPIED_S)
    risk_s = _Cell("totals", RISK_S)
    cost = _Cell("totals", COST)

    def before_change(self, n: int, gpus: Sequence[int] | np.ndarray) -> None:
        """Note what GPUs `gpus` of node n add to the sums, before they change.

        An empty GPU adds exactly nothing (its free share, load and counts are reset to
        exact zeros), so a side where every GPU is empty is skipped; `after_change` then
        adds the other side as it is, the same floating-point result as subtracting
        zeros. One change at a time: `after_change` must follow before the next."""
        if len(gpus):
            st = self.state
            self._kernels.contribution(st._gpu_f, st._gpu_i, self.actual, self.node_price, n,
                         gpu_index(gpus), self._side0, self._vecs0)

    def after_change(self, n: int, gpus: Sequence[int] | np.ndarray, before: None) -> None:
        """Move the sums by what the GPUs add now less what they added before."""
        if len(gpus):
            st = self.state
            self._kernels.after_change(
                st._gpu_f, st._gpu_i, self.actual, self.node_price, n, gpu_index(gpus),
                self.sums, self.by_slot, self._sides, self._vecs)

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
        within = dt <= (s0 + 1) * self.slot_len - (t0 % DAY_SECONDS)
        if not within:
            dur = slot_durations(t0, t, self.slots)
            self.totals[UTIL_S] += float(dur @ self.util_by_slot)
            self.totals[RISK_S] += float(dur @ self.over_by_slot)
            self.slot_time += dur
            self.slot_util += dur * self.util_by_slot
        self._kernels.integrate(self.totals, self.sums, self.by_slot, self.slot_sums, s0, dt,
                                within)
        self.last_t = t
        if t - self._last_sample >= self.slot_len:
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
