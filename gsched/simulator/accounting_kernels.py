"""The accounting's per-change arithmetic, compiled: one call before a change, one after.

What GPUs add to the running sums (`Accounting`): allocated share, occupied GPUs, cost
rate, utilisation and overload per slot. Computing that with numpy took a dozen calls
on arrays of 1 to 96 values per side of every start and finish; here it is one call
each. Every float comes from the same IEEE operations in the same order as the numpy
expressions it replaces, so the figures are bit for bit what they were
(`tests/simulator/test_accounting_kernels.py` compares with those expressions):

- one GPU: allocated share `min(max(1 - free, 0), 1)`, its node's price, the row
  `minimum(actual, 1)`, overload `actual > 1 + EPS` where it serves inference;
- several GPUs: the allocated shares and the occupied GPUs' prices summed as numpy's
  `sum` sums (`row_sum`, pairwise), the rows added one after another in placement
  order (numpy's `sum(axis=0)`), the overloads counted.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from gsched.scheduler.policies.state import EPS
from gsched.scheduler.policies.state_kernels import FREE, INFERENCE, JOBS, row_sum
from gsched.simulator.accounting import (
    ALLOC,
    ALLOC_NOW,
    ALLOC_S,
    COST,
    COST_RATE,
    OCCUPIED,
    OCCUPIED_NOW,
    OCCUPIED_S,
    OVER,
    PEAK,
    PRESENT,
    PRICE,
    RISK_S,
    UTIL,
    UTIL_S,
)


@njit(cache=True)
def contribution(gpu_f, gpu_i, actual, node_price, n, gpus, side, vecs
                 ):  # pragma: no cover - compiled
    """What GPUs `gpus` of node n add to the sums, into `side` (ALLOC, OCCUPIED, PRICE,
    PRESENT) and `vecs` (UTIL and OVER per slot); `side[PRESENT]` is 0 when they are all
    empty (they then add exactly nothing)."""
    k = gpus.shape[0]
    slots = vecs.shape[1]
    occupied = 0
    for g in gpus:
        if gpu_i[JOBS, n, g] > 0:
            occupied += 1
    if occupied == 0:
        side[PRESENT] = 0.0
        return
    side[PRESENT] = 1.0
    side[OCCUPIED] = occupied
    if k == 1:
        g = gpus[0]
        a = 1.0 - gpu_f[FREE, n, g]
        side[ALLOC] = 0.0 if a < 0.0 else 1.0 if a > 1.0 else a
        side[PRICE] = node_price[n]
        serves = gpu_i[INFERENCE, n, g] > 0
        for t in range(slots):
            x = actual[n, g, t]
            vecs[UTIL, t] = x if x < 1.0 else 1.0
            vecs[OVER, t] = 1.0 if serves and x > 1.0 + EPS else 0.0
        return
    shares = np.empty(k)
    prices = np.empty(occupied)
    j = 0
    for i in range(k):
        g = gpus[i]
        a = 1.0 - gpu_f[FREE, n, g]
        shares[i] = 0.0 if a < 0.0 else 1.0 if a > 1.0 else a
        if gpu_i[JOBS, n, g] > 0:
            prices[j] = node_price[n]
            j += 1
    side[ALLOC] = row_sum(shares)
    side[PRICE] = row_sum(prices)
    for t in range(slots):
        vecs[UTIL, t] = 0.0
        vecs[OVER, t] = 0.0
    for g in gpus:
        serves = gpu_i[INFERENCE, n, g] > 0
        for t in range(slots):
            x = actual[n, g, t]
            vecs[UTIL, t] += x if x < 1.0 else 1.0
            if serves and x > 1.0 + EPS:
                vecs[OVER, t] += 1.0


@njit(cache=True)
def apply_change(sums, by_slot, before, v0, after, v1):  # pragma: no cover - compiled
    """Move the running sums from `before` to `after` (one side may be absent), with the
    operations `Accounting.after_change` always used: `x += a1 - a0`, or `x += a1` /
    `x += 0.0 - a0` (`x -= u0` for vectors) when the GPUs were or became empty."""
    slots = by_slot.shape[1]
    if before[PRESENT] == 0.0:
        if after[PRESENT] == 0.0:
            return
        sums[ALLOC_NOW] += after[ALLOC]
        sums[OCCUPIED_NOW] += after[OCCUPIED]
        sums[COST_RATE] += after[PRICE] / 3600.0
        for t in range(slots):
            by_slot[UTIL, t] += v1[UTIL, t]
            by_slot[OVER, t] += v1[OVER, t]
    elif after[PRESENT] == 0.0:
        sums[ALLOC_NOW] += 0.0 - before[ALLOC]
        sums[OCCUPIED_NOW] -= before[OCCUPIED]
        sums[COST_RATE] += (0.0 - before[PRICE]) / 3600.0
        for t in range(slots):
            by_slot[UTIL, t] -= v0[UTIL, t]
            by_slot[OVER, t] -= v0[OVER, t]
    else:
        sums[ALLOC_NOW] += after[ALLOC] - before[ALLOC]
        sums[OCCUPIED_NOW] += after[OCCUPIED] - before[OCCUPIED]
        sums[COST_RATE] += (after[PRICE] - before[PRICE]) / 3600.0
        for t in range(slots):
            by_slot[UTIL, t] += v1[UTIL, t] - v0[UTIL, t]
            by_slot[OVER, t] += v1[OVER, t] - v0[OVER, t]
    if sums[OCCUPIED_NOW] > sums[PEAK]:
        sums[PEAK] = sums[OCCUPIED_NOW]


@njit(cache=True)
def after_change(gpu_f, gpu_i, actual, node_price, n, gpus, sums, by_slot, sides, vecs
                 ):  # pragma: no cover - compiled
    """`contribution` of the GPUs as they are now (side 1; side 0 is what
    `contribution` noted before the change), then `apply_change`: one call."""
    contribution(gpu_f, gpu_i, actual, node_price, n, gpus, sides[1], vecs[1])
    apply_change(sums, by_slot, sides[0], vecs[0], sides[1], vecs[1])


@njit(cache=True)
def integrate(totals, sums, by_slot, slot_sums, s0, dt, within):  # pragma: no cover
    """Integrate the figures over `dt` seconds; the per-slot ones (`slot_sums`: seconds
    and utilisation-seconds per slot) too when the interval lies `within` slot s0
    (`Accounting.advance` handles an interval crossing slots)."""
    if within:
        u = by_slot[UTIL, s0]
        totals[UTIL_S] += dt * u
        totals[RISK_S] += dt * by_slot[OVER, s0]
        slot_sums[0, s0] += dt
        slot_sums[1, s0] += dt * u
    totals[ALLOC_S] += dt * sums[ALLOC_NOW]
    totals[OCCUPIED_S] += dt * sums[OCCUPIED_NOW]
    totals[COST] += dt * sums[COST_RATE]
