"""Forecasts with uncertainty: quantiles, per-workload margins, walk-forward backtest."""

from __future__ import annotations

import numpy as np
import pytest

from gsched.models import DAY_SECONDS
from gsched.scheduler.packing.forecast import (
    QUANTILES,
    BacktestResult,
    DayScore,
    backtest,
    booking,
    choose_forecaster,
    daily_matrix,
    decayed_quantile,
    error_margin,
    level_seasonal,
    seasonal_quantiles,
    walk_forward,
)


def _noisy_days(days: int, noise: float, seed: int = 0, slots: int = 96) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = 0.5 + 0.4 * np.sin(np.linspace(0, 2 * np.pi, slots, endpoint=False))
    return shape[None, :] * (1 + rng.normal(0, noise, size=(days, slots)))


def test_daily_matrix_means_per_day_and_slot_with_gaps_as_nan() -> None:
    t = np.array([0.0, 100.0, 900.0, DAY_SECONDS + 10.0])
    v = np.array([1.0, 3.0, 5.0, 7.0])
    first, m = daily_matrix(t, v, slots=96)
    assert first == 0 and m.shape == (2, 96)
    assert m[0, 0] == 2.0 and m[0, 1] == 5.0 and m[1, 0] == 7.0
    assert np.isnan(m[1, 1])


def test_quantile_forecasters_are_ordered_p50_below_p99() -> None:
    hist = _noisy_days(10, 0.2)
    for fc in (seasonal_quantiles(), level_seasonal()):
        q = fc.predict(hist)
        assert q.shape == (len(QUANTILES), 96)
        assert (q[0] <= q[1] + 1e-12).all() and (q[1] <= q[2] + 1e-12).all()
        assert q[2].mean() > q[0].mean() * 1.1  # the spread is real, not a copy


def test_decayed_quantile_weights_recent_days_more() -> None:
    hist = np.vstack([np.full((5, 96), 0.2), np.full((2, 96), 0.8)])
    short = decayed_quantile(0.5, half_life_days=0.5).predict(hist)[0]
    long = decayed_quantile(0.5, half_life_days=100.0).predict(hist)[0]
    assert short.mean() == pytest.approx(0.8)
    assert long.mean() == pytest.approx(0.2)


def test_error_margin_is_the_quantile_of_relative_excess_in_busy_slots() -> None:
    f = np.array([1.0, 1.0, 1.0, 1.0, 0.1])
    a = np.array([1.1, 1.2, 0.9, 1.0, 5.0])  # the quiet slot's spike does not count
    m = error_margin([f], [a], q=1.0)
    assert m == pytest.approx(0.2)
    assert error_margin([f], [f * 0.5], q=0.99) == 0.0  # never negative
    assert error_margin([], [], q=0.99) == 0.0
    add = error_margin([f], [a], q=1.0, kind="additive")
    assert add == pytest.approx(4.9)


def test_booking_scales_or_adds_and_caps() -> None:
    row = np.array([0.2, 0.5, 0.9])
    assert booking(row, 0.2).tolist() == pytest.approx([0.24, 0.6, 1.0])
    assert booking(row, 0.1, kind="additive").tolist() == pytest.approx([0.3, 0.6, 1.0])


def test_walk_forward_margin_cuts_exceedance_of_the_booking() -> None:
    hist = _noisy_days(20, 0.1, seed=3)
    fc = level_seasonal()
    with_margin = walk_forward(hist, fc, quantile_index=0, margin_q=0.99)
    no_margin = walk_forward(hist, fc, quantile_index=0, margin_q=0.0)
    exc_m = np.mean([d.exceeded for d in with_margin])
    exc_0 = np.mean([d.exceeded for d in no_margin])
    assert len(with_margin) == 20 - 6
    assert exc_m < exc_0 / 2
    assert np.mean([d.booked for d in with_margin]) > np.mean([d.booked for d in no_margin])


def test_walk_forward_uses_only_the_past() -> None:
    hist = _noisy_days(12, 0.1, seed=1)
    changed = hist.copy()
    changed[-1] *= 5.0  # the last day changes: scores of earlier days must not
    a = walk_forward(hist, seasonal_quantiles())
    b = walk_forward(changed, seasonal_quantiles())
    assert a[:-1] == b[:-1] and a[-1] != b[-1]


def test_backtest_and_choice_pick_the_cheapest_forecaster_within_the_risk() -> None:
    series = {"a": _noisy_days(12, 0.1, seed=2), "b": _noisy_days(12, 0.3, seed=4)}
    res = backtest(series, [seasonal_quantiles(), level_seasonal()])
    assert {(r.workload, r.forecaster) for r in res} == {
        (w, f) for w in series for f in ("seasonal-q7d", "level-ewma7d")}

    def fake(name: str, exceeded: float, booked: float) -> BacktestResult:
        return BacktestResult("w", name, [DayScore(exceeded, 0.0, booked, 0.5, 0.0)])

    rs = [fake("tight", 0.05, 0.6), fake("safe", 0.01, 0.9), fake("cheap-safe", 0.02, 0.8)]
    assert choose_forecaster(rs, max_exceeded=0.02) == "cheap-safe"
    assert choose_forecaster(rs, max_exceeded=0.001) == "safe"
