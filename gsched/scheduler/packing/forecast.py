"""Daily forecasts with uncertainty: per-slot quantiles, per-workload error margins.

`profiles.learn_profile` books one decayed high quantile (p95) per slot for every
workload and leaves the rest to one global headroom. Here each workload gets:
- per-slot quantiles (p50, p90, p99) from a forecaster over its daily history;
- its *own* error margin, measured walk-forward on held-back days: each held-back day
  is forecast from the days before it only, and the margin is a high quantile of how far
  the real day came above the chosen quantile (relative to the forecast, in busy slots);
- a booking: the chosen quantile times (1 + margin), which is what the scheduler packs.

`backtest` runs that walk-forward over a whole history and reports, per workload and
forecaster, how often the real day exceeded the booking and how much was booked, so the
forecaster is chosen by measurement (`choose_forecaster`). Everything is numpy over a
(days x slots) matrix of slot means; no model is fitted per slot.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from gsched.models import DAY_SECONDS, DEFAULT_SLOTS

#: the quantiles every forecaster gives
QUANTILES = (0.5, 0.9, 0.99)
#: a slot is "busy" (counts for the margin) when its forecast is at least this share of
#: the day's forecast peak: relative errors in near-empty slots say nothing about risk
BUSY_SHARE = 0.5


def daily_matrix(t: np.ndarray, v: np.ndarray, slots: int = DEFAULT_SLOTS,
                 day_offset_s: float = 0.0) -> tuple[int, np.ndarray]:
    """(first day number, (days x slots) slot means); NaN where a slot had no sample."""
    t = np.asarray(t, dtype=np.float64) + day_offset_s
    v = np.asarray(v, dtype=np.float64)
    if t.shape != v.shape:
        raise ValueError(f"timestamps ({t.shape}) and values ({v.shape}) differ in shape")
    if not len(t):
        return 0, np.zeros((0, slots))
    day = np.floor(t / DAY_SECONDS).astype(np.int64)
    first = int(day.min())
    n_days = int(day.max()) - first + 1
    slot = ((t % DAY_SECONDS) // (DAY_SECONDS / slots)).astype(np.int64) % slots
    cell = (day - first) * slots + slot
    total = np.bincount(cell, weights=v, minlength=n_days * slots)
    count = np.bincount(cell, minlength=n_days * slots)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return first, out.reshape(n_days, slots)


def _fill(row: np.ndarray) -> np.ndarray:
    ok = np.isfinite(row)
    if ok.all():
        return row
    if not ok.any():
        return np.zeros_like(row)
    x = np.arange(len(row))
    return np.interp(x, x[ok], row[ok], period=len(row))


def _pooled(hist: np.ndarray, smooth: int) -> np.ndarray:
    """(days * (2 smooth + 1), slots): each slot's samples with its neighbours' added."""
    if smooth <= 0:
        return hist
    return np.concatenate([np.roll(hist, k, axis=1) for k in range(-smooth, smooth + 1)])


def _nanquantile(x: np.ndarray, q: Sequence[float]) -> np.ndarray:
    """Per-column quantiles ignoring NaN; a column without data gives NaN (filled later)."""
    out = np.full((len(q), x.shape[1]), np.nan)
    ok = np.isfinite(x).any(axis=0)
    if ok.any():
        out[:, ok] = np.nanquantile(x[:, ok], q, axis=0)
    return out


@dataclass(frozen=True)
class Forecaster:
    """A named rule from a (days x slots) history to per-slot quantiles of the next day.

    `predict(hist)` returns (len(QUANTILES), slots); NaN in `hist` are missing slots.
    """

    name: str
    predict: Callable[[np.ndarray], np.ndarray]


def decayed_quantile(q: float = 0.95, half_life_days: float = 3.0) -> Forecaster:
    """The present method (`profiles.learn_profile`) on slot means: a decay-weighted
    quantile per slot over every past day, the same value for every quantile asked."""

    def predict(hist: np.ndarray) -> np.ndarray:
        d = len(hist)
        w = np.power(0.5, (d - 1 - np.arange(d)) / half_life_days)
        out = np.full(hist.shape[1], np.nan)
        for s in range(hist.shape[1]):
            col = hist[:, s]
            ok = np.isfinite(col)
            if not ok.any():
                continue
            order = np.argsort(col[ok])
            vals, ws = col[ok][order], w[ok][order]
            cum = np.cumsum(ws)
            out[s] = vals[np.searchsorted(cum, q * cum[-1] - 1e-12)]
        row = _fill(out)
        return np.repeat(row[None, :], len(QUANTILES), axis=0)

    return Forecaster(f"decayed-p{round(q * 100)}", predict)


def seasonal_quantiles(days: int = 7, smooth: int = 1) -> Forecaster:
    """Empirical per-slot quantiles over the last `days` days, each slot pooled with its
    `smooth` neighbours on either side (load is smooth within the hour)."""

    def predict(hist: np.ndarray) -> np.ndarray:
        recent = hist[-days:]
        qs = _nanquantile(_pooled(recent, smooth), QUANTILES)
        return np.array([_fill(r) for r in qs])

    return Forecaster(f"seasonal-q{days}d", predict)


def level_seasonal(days: int = 7, alpha: float = 0.5, smooth: int = 1) -> Forecaster:
    """Seasonal exponential smoothing with a level: the per-slot EWMA of past days (the
    daily shape, Holt-Winters' seasonal term with period one day) scaled by how the last
    day's level compares with the shape's; quantiles from the shape's residuals."""

    def predict(hist: np.ndarray) -> np.ndarray:
        recent = np.array([_fill(r) for r in hist[-days:]])
        shape = recent[0].copy()
        for row in recent[1:]:
            shape = alpha * row + (1 - alpha) * shape
        level = float(recent[-1].mean()) / max(float(shape.mean()), 1e-12)
        level = float(np.clip(level, 0.5, 2.0))
        point = shape * (1 + 0.5 * (level - 1))  # half the level change carries over
        resid = recent - point[None, :]
        rq = _nanquantile(_pooled(resid, smooth), QUANTILES)
        return np.maximum(point[None, :] + np.nan_to_num(rq), 0.0)

    return Forecaster(f"level-ewma{days}d", predict)


def default_forecasters() -> list[Forecaster]:
    return [decayed_quantile(), seasonal_quantiles(), level_seasonal()]


def relative_excess(forecast: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """How far `actual` came above `forecast`, relative to it, in the busy slots only."""
    f = np.asarray(forecast, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    peak = float(np.nanmax(f)) if f.size else 0.0
    busy = (f >= BUSY_SHARE * peak) & np.isfinite(a) & (f > 1e-9)
    return (a[busy] - f[busy]) / f[busy]


def absolute_excess(forecast: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """How far `actual` came above `forecast` in every slot, in load units (an additive
    margin: a valley gets as much room as the peak)."""
    f = np.asarray(forecast, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    ok = np.isfinite(a)
    return a[ok] - f[ok]


def error_margin(forecasts: Sequence[np.ndarray], actuals: Sequence[np.ndarray],
                 q: float = 0.99, kind: str = "relative") -> float:
    """A workload's margin: the `q` quantile of its excess over held-back days (forecast
    of each day against that day), never negative; 0 without held-back days. `kind`
    "relative" measures busy slots against the forecast there (`relative_excess`),
    "additive" every slot in load units (`absolute_excess`)."""
    fn = relative_excess if kind == "relative" else absolute_excess
    ex = [fn(f, a) for f, a in zip(forecasts, actuals, strict=True)]
    pooled = np.concatenate(ex) if ex else np.zeros(0)
    if not len(pooled):
        return 0.0
    return max(float(np.quantile(pooled, q)), 0.0)


def booking(quantile_row: np.ndarray, margin: float, cap: float = 1.0,
            kind: str = "relative") -> np.ndarray:
    """What the workload books per slot: the chosen quantile times (1 + its margin), or
    plus the margin for an additive one."""
    row = np.asarray(quantile_row, dtype=np.float64)
    out = row * (1.0 + margin) if kind == "relative" else row + margin
    return np.clip(out, 0.0, cap)


def own_margin(t: np.ndarray, v: np.ndarray, slots: int = DEFAULT_SLOTS, q: float = 0.9,
               holdout: int = 3, min_train: int = 1, forecaster: Forecaster | None = None,
               kind: str = "relative") -> float | None:
    """A workload's own margin from its raw history (timestamps, utilisation), as the
    scoreboard measures it: each of the last `holdout` days is forecast from the days
    before it (`forecaster`, default the decayed p95 the live profiles use) and the
    margin is the `q` quantile of how far the day came above it (`error_margin`). None
    while the history has fewer than `min_train + holdout` days."""
    _, hist = daily_matrix(t, v, slots)
    if len(hist) < min_train + holdout:
        return None
    fc = forecaster or decayed_quantile()
    held = range(len(hist) - holdout, len(hist))
    return error_margin([fc.predict(hist[:k])[1] for k in held], [hist[k] for k in held],
                        q, kind)


@dataclass(frozen=True)
class DayScore:
    """One forecaster on one held-out day of one workload."""

    exceeded: float      # share of slots whose real load came above the booking
    excess: float        # mean over slots of max(real - booking, 0)
    booked: float        # mean booking
    actual: float        # mean real load
    pinball_p50: float   # quantile loss of the p50


@dataclass(frozen=True)
class BacktestResult:
    workload: str
    forecaster: str
    days: list[DayScore]

    def mean(self, field: str) -> float:
        return float(np.mean([getattr(d, field) for d in self.days])) if self.days else 0.0


def _pinball(f: np.ndarray, a: np.ndarray, q: float) -> float:
    ok = np.isfinite(a)
    d = a[ok] - f[ok]
    return float(np.mean(np.maximum(q * d, (q - 1) * d))) if ok.any() else 0.0


def walk_forward(hist: np.ndarray, fc: Forecaster, quantile_index: int = 1,
                 min_train: int = 3, holdout: int = 3, margin_q: float = 0.99,
                 first_test: int | None = None, kind: str = "relative") -> list[DayScore]:
    """Score `fc` on every day from `first_test` on (default: as soon as `min_train`
    training days and `holdout` held-back days exist). The margin used on day d comes
    only from the `holdout` days before d, each forecast from the days before *it*."""
    n = len(hist)
    start = first_test if first_test is not None else min_train + holdout
    cache: dict[int, np.ndarray] = {}

    def forecast(d: int) -> np.ndarray:
        if d not in cache:
            cache[d] = fc.predict(hist[:d])
        return cache[d]

    scores = []
    for d in range(max(start, min_train + 1), n):
        held = [k for k in range(max(min_train, d - holdout), d)]
        margin = error_margin([forecast(k)[quantile_index] for k in held],
                              [hist[k] for k in held], margin_q, kind)
        q = forecast(d)
        book = booking(q[quantile_index], margin, cap=np.inf, kind=kind)
        real = hist[d]
        ok = np.isfinite(real)
        if not ok.any():
            continue
        over = np.maximum(real[ok] - book[ok], 0.0)
        scores.append(DayScore(exceeded=float((over > 1e-12).mean()),
                               excess=float(over.mean()), booked=float(book[ok].mean()),
                               actual=float(real[ok].mean()),
                               pinball_p50=_pinball(q[0], real, 0.5)))
    return scores


def backtest(series: dict[str, np.ndarray], forecasters: Sequence[Forecaster] | None = None,
             **kw: object) -> list[BacktestResult]:
    """Walk-forward every forecaster over every workload's (days x slots) history."""
    fcs = list(forecasters) if forecasters is not None else default_forecasters()
    return [BacktestResult(w, fc.name, walk_forward(hist, fc, **kw))  # type: ignore[arg-type]
            for w, hist in series.items() for fc in fcs]


def choose_forecaster(results: Sequence[BacktestResult], max_exceeded: float = 0.02) -> str:
    """The forecaster that books least while the real load exceeds its booking in at most
    `max_exceeded` of slots (averaged over workloads); failing that, the one that
    exceeds least."""
    names = sorted({r.forecaster for r in results})
    exc = {n: float(np.mean([r.mean("exceeded") for r in results if r.forecaster == n]))
           for n in names}
    booked = {n: float(np.mean([r.mean("booked") for r in results if r.forecaster == n]))
              for n in names}
    ok = [n for n in names if exc[n] <= max_exceeded]
    if ok:
        return min(ok, key=lambda n: (booked[n], n))
    return min(names, key=lambda n: (exc[n], booked[n], n))
