"""`ClusterState.allocate` / `release` on the GPU arrays: compiled, one call per change.

A start or finish touches one node's row in a dozen arrays (free share, GPU memory,
daily load, the preemptible part of both, job counts, the node's aggregates). As numpy
operations that is a dozen calls on arrays of 1 to 96 values, each costing far more in
call overhead than in arithmetic; in a million-job replay they were a fifth of the
time. These numba kernels do the same arithmetic, element by element, in one call.

They are not approximations: every float is made by the same IEEE operation, in the
same order, as the numpy expression it replaces (`free[n, gpus] -= r`, `load[n, g] +=
profile`, the row sum `np.add.reduce`, a sort), so the state is bit for bit what the
numpy code made (`tests/policies/test_state_kernels.py` checks it on random sequences).
`row_sum` reproduces numpy's pairwise summation (`pairwise_sum` in numpy's loops): a
plain left-to-right sum differs in the last bit for rows of eight or more.

Compiled on first use and cached on disk (`cache=True`, in `__pycache__` beside this
file): a checkout compiles once (about 5 s), later processes load the cache. This module
is imported with the first `ClusterState`, so a process that builds none does not pay
numba's import.
"""

from __future__ import annotations

import numpy as np
from numba import njit

#: numpy's pairwise summation block (`PW_BLOCKSIZE`)
_BLOCK = 128

@njit(cache=True)
def _block_sum(a: np.ndarray, lo: int, n: int) -> float:  # pragma: no cover - compiled
    """numpy's `pairwise_sum` over a[lo:lo + n] for n <= 128 (unrolled by eight)."""
    if n < 8:
        res = 0.0
        for i in range(lo, lo + n):
            res += a[i]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = 8
    while i < n - (n % 8):
        j = lo + i
        r0 += a[j]
        r1 += a[j + 1]
        r2 += a[j + 2]
        r3 += a[j + 3]
        r4 += a[j + 4]
        r5 += a[j + 5]
        r6 += a[j + 6]
        r7 += a[j + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return res


@njit(cache=True)
def row_sum(a: np.ndarray) -> float:
    """`np.add.reduce(a)` of a 1-D float64 array, bit for bit (identity 0.0, pairwise).

    Past 128 values numpy halves the range (rounded to a multiple of eight) and adds the
    halves' sums; that recursion is unrolled here on an explicit stack (numba's disk
    cache does not take recursive functions)."""
    n = a.shape[0]
    if n <= _BLOCK:
        return 0.0 + _block_sum(a, 0, n)
    # tasks: (kind, start, length), kind 0 = sum a range, 1 = add the last two values
    kind = np.empty(256, dtype=np.int64)
    start = np.empty(256, dtype=np.int64)
    length = np.empty(256, dtype=np.int64)
    vals = np.empty(128)
    kind[0], start[0], length[0] = 0, 0, n
    tasks, nvals = 1, 0
    while tasks:
        tasks -= 1
        k, lo, m = kind[tasks], start[tasks], length[tasks]
        if k == 1:
            nvals -= 1
            vals[nvals - 1] = vals[nvals - 1] + vals[nvals]
        elif m <= _BLOCK:
            vals[nvals] = _block_sum(a, lo, m)
            nvals += 1
        else:  # left half, then right half, then their sum (pushed in reverse)
            half = m // 2
            half -= half % 8
            kind[tasks], start[tasks], length[tasks] = 1, 0, 0
            kind[tasks + 1], start[tasks + 1], length[tasks + 1] = 0, lo + half, m - half
            kind[tasks + 2], start[tasks + 2], length[tasks + 2] = 0, lo, half
            tasks += 3
    return 0.0 + vals[0]


@njit(cache=True)
def refresh_node(free, gpu_valid, agg, n):  # pragma: no cover - compiled
    """Node n's aggregates from its row: the k-th largest free shares (`agg[:G, n]`,
    `ClusterState.kth_free`) and the reserved share (`agg[G, n]`, `node_alloc`)."""
    g_count = free.shape[1]
    used = np.empty(g_count)
    ordered = np.empty(g_count)
    for g in range(g_count):
        f = free[n, g]
        used[g] = 1.0 - f if gpu_valid[n, g] else 0.0
        ordered[g] = f
    agg[g_count, n] = row_sum(used)
    ordered.sort()
    for k in range(g_count):
        agg[k, n] = ordered[g_count - 1 - k]


# The packed arrays (`ClusterState`): gpu_f = (free, gpu_mem_free, preemptible_reserved),
# gpu_i = (jobs_on_gpu, inference_on_gpu, forecast_on_gpu), loads = (load,
# preemptible_load), agg = (kth_free rows, node_alloc); each (nodes, GPUs[, slots]).
FREE, GPU_MEM, PRE_RESERVED = 0, 1, 2
JOBS, INFERENCE, FORECAST = 0, 1, 2
LOAD, PRE_LOAD = 0, 1


@njit(cache=True)
def book(gpu_f, gpu_i, loads, agg, node_version, gpu_valid,
         n, gpus, reserved, gpu_mem, profile, preemptible, is_inference, is_forecast
         ):  # pragma: no cover - compiled
    """Book a job on node n's `gpus`: what `allocate` does to the GPU arrays."""
    slots = profile.shape[0]
    for g in gpus:
        gpu_f[FREE, n, g] -= reserved
        if gpu_mem:
            gpu_f[GPU_MEM, n, g] -= gpu_mem
        for t in range(slots):
            loads[LOAD, n, g, t] += profile[t]
        if preemptible:
            for t in range(slots):
                loads[PRE_LOAD, n, g, t] += profile[t]
            gpu_f[PRE_RESERVED, n, g] += reserved
        gpu_i[JOBS, n, g] += 1
        if is_inference:
            gpu_i[INFERENCE, n, g] += 1
            if is_forecast:
                gpu_i[FORECAST, n, g] += 1
    refresh_node(gpu_f[FREE], gpu_valid, agg, n)
    node_version[n] += 1


@njit(cache=True)
def unbook(gpu_f, gpu_i, loads, agg, node_version, gpu_valid, gpu_mem_total,
           n, gpus, reserved, gpu_mem, profile, preemptible, is_inference, is_forecast
           ):  # pragma: no cover - compiled
    """Undo `book`: what `release` does to the GPU arrays. GPUs the job leaves empty
    are snapped back to exactly empty (no float dust from += / -=)."""
    slots = profile.shape[0]
    last = True  # alone on every one of its GPUs: the reset overwrites the arithmetic
    for g in gpus:
        if gpu_i[JOBS, n, g] != 1:
            last = False
    if not last:
        for g in gpus:
            gpu_f[FREE, n, g] += reserved
            if gpu_mem:
                gpu_f[GPU_MEM, n, g] += gpu_mem
            for t in range(slots):
                loads[LOAD, n, g, t] -= profile[t]
            if preemptible:
                for t in range(slots):
                    loads[PRE_LOAD, n, g, t] -= profile[t]
                gpu_f[PRE_RESERVED, n, g] -= reserved
    for g in gpus:
        gpu_i[JOBS, n, g] -= 1
        if is_inference:
            gpu_i[INFERENCE, n, g] -= 1
            if is_forecast:
                gpu_i[FORECAST, n, g] -= 1
    for g in gpus:
        if gpu_i[JOBS, n, g] == 0:
            gpu_f[FREE, n, g] = 1.0
            gpu_f[GPU_MEM, n, g] = gpu_mem_total[n]
            for t in range(slots):
                loads[LOAD, n, g, t] = 0.0
                loads[PRE_LOAD, n, g, t] = 0.0
            gpu_f[PRE_RESERVED, n, g] = 0.0
    refresh_node(gpu_f[FREE], gpu_valid, agg, n)
    node_version[n] += 1
