"""The compiled tidal scorer and best-GPU pick are bit for bit the numpy expressions they
replace (`online_kernels`): same floats, same ties, on random states."""

from __future__ import annotations

import numpy as np
import pytest

from gsched.scheduler.policies.online import W_FILL, W_INTERLEAVE, W_OCCUPIED, top_k
from gsched.scheduler.policies.online_kernels import best_gpu, gpu_scores
from gsched.scheduler.policies.state import EPS
from gsched.scheduler.policies.tidal_frag import W_BAND, W_TIDAL


def numpy_scores(firm_block, lb, firm_peak, firm_mean, occupied, ok, rows, lpeak, lmean,
                 flat):
    """The scorer as `LoadIndex.fit` wrote it in numpy (before the kernel)."""
    fp = firm_peak[rows]
    if flat:
        new_peak = fp + lpeak
    else:
        new_peak = firm_block[0][rows] + lb[0]
        tmp = np.empty_like(new_peak)
        for b in range(1, firm_block.shape[0]):
            np.add(firm_block[b][rows], lb[b], out=tmp)
            np.maximum(new_peak, tmp, out=new_peak)
    inter = 1.0 - (new_peak - fp) / max(lpeak, EPS)
    score = (occupied[rows] + W_INTERLEAVE * np.clip(inter, 0.0, 1.0)
             + W_FILL * np.minimum(firm_mean[rows] + lmean, 1.0))
    return np.where(ok, score, -np.inf)


def numpy_best(band, score, ok, lf):
    """`_combine`'s one-GPU pick as it was written in numpy."""
    per_gpu = score + W_BAND * band if lf else band + W_TIDAL * score
    best = np.argmax(per_gpu, axis=1)
    at = np.arange(0, band.size, band.shape[1]) + best
    b, t = band.reshape(-1)[at], score.reshape(-1)[at]
    t[~ok.reshape(-1)[at]] = 0.0
    return best, b, t


def state(rng, n=300, g=8, blocks=12):
    # coarse values make exact ties (same block maxima, same scores) common
    firm_block = np.round(rng.random((blocks, n, g)) * 0.6, 1)
    firm_block[:, rng.random(n) < 0.2] = 0.0  # empty nodes: every GPU ties
    firm_peak = firm_block.max(axis=0)
    firm_mean = firm_peak * np.round(rng.random((n, g)), 2)
    occupied = W_OCCUPIED * (firm_peak > 0)
    return firm_block, firm_peak, firm_mean, occupied


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("flat", [False, True])
def test_gpu_scores_match_numpy(seed: int, flat: bool) -> None:
    rng = np.random.default_rng(seed)
    firm_block, firm_peak, firm_mean, occupied = state(rng)
    n, g = firm_peak.shape
    lb = np.round(rng.random(firm_block.shape[0]) * 0.5, 1)
    if seed == 0:
        lb[:] = 0.0  # a job of no load: the EPS floor of the denominator
    lpeak, lmean = float(lb.max()), float(lb.mean())  # as `LoadIndex._job_view` has them
    node_major = np.ascontiguousarray(np.moveaxis(firm_block, 0, 2))  # as `LoadIndex`
    every = np.arange(n)
    some = np.sort(rng.choice(n, size=n // 3, replace=False))
    for rows in (every, some):
        ok = rng.random((len(rows), g)) < 0.7
        want = numpy_scores(firm_block, lb, firm_peak, firm_mean, occupied, ok,
                            slice(None) if rows is every else rows, lpeak, lmean, flat)
        got = gpu_scores(node_major, lb, firm_peak, firm_mean, occupied, ok, rows, lpeak,
                         lmean, flat, W_INTERLEAVE, W_FILL, EPS)
        assert got.tobytes() == want.tobytes()


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("lf", [False, True])
def test_best_gpu_matches_argmax(seed: int, lf: bool) -> None:
    rng = np.random.default_rng(seed)
    n, g = 400, 8
    band = np.round(rng.random((n, g)) * 100) // 10  # banded: many ties
    ok = rng.random((n, g)) < 0.6
    ok[:20] = False  # rows where nothing fits: argmax's first GPU, tidal 0
    score = np.where(ok, np.round(rng.random((n, g)), 1), -np.inf)
    want = numpy_best(band, score, ok, lf)
    got = best_gpu(band, score, ok, lf, W_BAND if lf else W_TIDAL)
    for a, b in zip(got, want, strict=True):
        assert a.tobytes() == b.tobytes()


def numpy_top_k(score, ok, k):
    """`online.top_k` as it was written in numpy (k argmax passes)."""
    w = np.where(ok, score, -np.inf)
    take = np.zeros(ok.shape, dtype=bool)
    flat_take, flat_w = take.reshape(-1), w.reshape(-1)
    first = np.arange(0, w.size, max(w.shape[1], 1))
    for _ in range(min(k, w.shape[1])):
        at = first + np.argmax(w, axis=1)
        flat_take[at] = True
        flat_w[at] = -np.inf
    return take & ok


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("k", [1, 2, 3, 8, 9])
def test_top_k_matches_argmax_passes(seed: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    ok = rng.random((300, 8)) < 0.6
    ok[:10] = False
    score = np.round(rng.random((300, 8)), 1)  # ties
    assert (top_k(score, ok, k) == numpy_top_k(score, ok, k)).all()
