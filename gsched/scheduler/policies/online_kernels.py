"""`tidal`'s per-GPU score and per-node best GPU: compiled, one pass each.

At 10,000 nodes a `tidal` prioritize scores 80,000 GPUs: the day's new peak over 12
blocks, then the interleave and fill terms (`online.LoadIndex.fit`'s scorer), then each
node's best GPU by the ranking of `tidal_frag.TimeFragmentation._combine`. As numpy
expressions that is about forty passes over (nodes x GPUs) arrays, each reading and
writing memory the next one reads again; these kernels make each GPU's value in one
visit, which is what lets one core answer a thousand extender requests a second.

They are not approximations: every float is made by the same IEEE operation, in the same
order, as the numpy expression it replaces (`np.maximum` block by block, `np.clip`,
`np.minimum`, the weighted sums as written), and ties go where `np.argmax` sends them
(the first highest), so the scores, the ranks and every decision are bit for bit what
the numpy code made (`tests/policies/test_online_kernels.py` checks it against that code
on random states). Compiled on first use and cached on disk (`cache=True`), as
`state_kernels`.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def gpu_scores(firm_block, lb, firm_peak, firm_mean, occupied, ok, rows, lpeak, lmean,
               flat, w_interleave, w_fill, eps):  # pragma: no cover - compiled
    """(len(rows), gpus) score of each fitting GPU of the nodes `rows`, -inf elsewhere.

    The job's new daily peak on a GPU is the highest firm block maximum plus the job's
    block maximum (`firm_block`: nodes x GPUs x blocks; `flat`: the firm peak plus the
    job's flat load). On a GPU without firm load every block maximum is 0, so the new
    peak is the job's own peak (`0.0 + x == x`, and the highest block maximum of the
    job is its peak): its blocks are not read. The score rewards an occupied GPU, peaks
    that interleave (the new peak hardly above the old) and a fuller day, as
    `online.LoadIndex.fit` documents."""
    nb = firm_block.shape[2]
    m, g = ok.shape
    out = np.empty((m, g))
    denom = max(lpeak, eps)
    for i in range(m):
        n = rows[i]
        for j in range(g):
            if not ok[i, j]:
                out[i, j] = -np.inf
                continue
            fp = firm_peak[n, j]
            if flat:
                peak = fp + lpeak
            elif fp == 0.0:
                peak = lpeak
            else:
                peak = firm_block[n, j, 0] + lb[0]
                for b in range(1, nb):
                    v = firm_block[n, j, b] + lb[b]
                    if v > peak:
                        peak = v
            inter = 1.0 - (peak - fp) / denom
            if inter < 0.0:
                inter = 0.0
            elif inter > 1.0:
                inter = 1.0
            fill = firm_mean[n, j] + lmean
            if fill > 1.0:
                fill = 1.0
            out[i, j] = (occupied[n, j] + w_interleave * inter) + w_fill * fill
    return out


@njit(cache=True)
def best_gpu(band, score, ok, load_first, w):  # pragma: no cover - compiled
    """(best GPU, its band, its tidal score or 0 where it does not fit) per node, for a
    one-GPU job: the first GPU with the highest `score + w * band` (`load_first`) or
    `band + w * score` (else), as `np.argmax` picks it."""
    m, g = band.shape
    best = np.zeros(m, dtype=np.int64)
    band_at = np.empty(m)
    tidal_at = np.empty(m)
    for i in range(m):
        top = 0
        hi = 0.0
        for j in range(g):
            v = score[i, j] + w * band[i, j] if load_first else band[i, j] + w * score[i, j]
            if j == 0 or v > hi:
                hi = v
                top = j
        best[i] = top
        band_at[i] = band[i, top]
        tidal_at[i] = score[i, top] if ok[i, top] else 0.0
    return best, band_at, tidal_at


@njit(cache=True)
def top_k(score, ok, k):  # pragma: no cover - compiled
    """(rows, gpus) mask of each row's `k` best-scoring fitting GPUs: `k` picks of the
    first highest of `where(ok, score, -inf)`, each then set to -inf, kept where they
    fit (`online.top_k`, which documents why this is what a stable sort would take)."""
    m, g = score.shape
    take = np.zeros((m, g), dtype=np.bool_)
    w = np.empty(g)
    for i in range(m):
        for j in range(g):
            w[j] = score[i, j] if ok[i, j] else -np.inf
        for _ in range(min(k, g)):
            top = 0
            for j in range(1, g):
                if w[j] > w[top]:
                    top = j
            take[i, top] = True
            w[top] = -np.inf
        for j in range(g):
            take[i, j] = take[i, j] and ok[i, j]
    return take


@njit(cache=True)
def guarded_fit(base, room, room_min, load_win, firm_peak, firm_block, lb, firm_t, load,
                tp, lpeak, cap, preemptible):  # pragma: no cover - compiled
    """(nodes, gpus) mask of the GPUs a guarded (profiled inference) job fits, every node
    asked: `online.LoadIndex.fit`'s tests for such a job, GPU by GPU, in one pass.

    The window: room under the cap in every coming slot for the job's load there (sure
    when the least room is at least the job's highest window load). The day, for a
    non-preemptible job: the firm peak plus the job's peak under the cap, else the block
    maxima, else slot by slot (only the GPUs the cheaper test leaves open). The same
    sums and comparisons as the numpy, so the same answer."""
    m, g = base.shape
    w = load_win.shape[0]
    wmax = load_win[0]
    for s in range(1, w):
        if load_win[s] > wmax:
            wmax = load_win[s]
    ok = np.zeros((m, g), dtype=np.bool_)
    for n in range(m):
        for j in range(g):
            if not base[n, j]:
                continue
            if not room_min[n, j] >= wmax:
                fits = True
                for s in range(w):
                    if not room[s, n, j] >= load_win[s]:
                        fits = False
                        break
                if not fits:
                    continue
            if not preemptible and not firm_peak[n, j] + lpeak <= cap:
                peak = firm_block[n, j, 0] + lb[0]
                for b in range(1, firm_block.shape[2]):
                    v = firm_block[n, j, b] + lb[b]
                    if v > peak:
                        peak = v
                if not peak <= cap:
                    if not firm_t[tp, n, j] + load[tp] <= cap:
                        continue
                    fits = True
                    for t in range(load.shape[0]):
                        if not firm_t[t, n, j] + load[t] <= cap:
                            fits = False
                            break
                    if not fits:
                        continue
            ok[n, j] = True
    return ok
