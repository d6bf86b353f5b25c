"""The phase estimate: which lag explains the measured day, and when to trust it."""

from __future__ import annotations

import numpy as np

from gsched.scheduler.policies.rephase import fit_errors, phase_lag


def bump(center: float, slots: int = 96) -> np.ndarray:
    s = np.arange(slots)
    d = np.minimum(np.abs(s - center), slots - np.abs(s - center))
    return 0.1 + 0.7 * np.exp(-(d / 6.0) ** 2)


WINDOW = np.arange(40, 48)


def test_a_late_day_is_found_at_its_lag() -> None:
    f = bump(44)
    measured = np.roll(f, 4)[WINDOW]
    assert phase_lag(measured, f, WINDOW) == 4
    assert phase_lag(np.roll(f, -3)[WINDOW], f, WINDOW) == -3  # early


def test_a_booking_with_a_margin_is_not_a_phase_error() -> None:
    f = bump(44)
    assert phase_lag(f[WINDOW] * 0.8, f, WINDOW) == 0  # the booking is 25% over: a margin
    errs = fit_errors(f[WINDOW] * 0.8, f, WINDOW, 8)
    assert errs[8] < 1e-12


def test_noise_and_flat_stretches_keep_the_lag_in_use() -> None:
    f = bump(44)
    rng = np.random.default_rng(0)
    for _ in range(50):
        noisy = f[WINDOW] * (1 + rng.normal(0, 0.1, len(WINDOW)))
        assert phase_lag(noisy, f, WINDOW) == 0
    flat = np.full(96, 0.3)
    assert phase_lag(flat[WINDOW], flat, WINDOW, current=3) == 3  # every lag fits: keep


def test_a_rise_that_has_not_come_moves_the_lag_a_slot_at_a_time() -> None:
    """The forecast rises at slot 46; the load has not. Every later lag fits the flat
    measurement equally; the nearest one is chosen, so the booking follows the delay."""
    f = np.full(96, 0.1)
    f[46:60] = 0.8
    w = np.arange(39, 47)
    assert phase_lag(np.full(8, 0.1), f, w) == 1


def test_among_equal_fits_the_lag_in_use_is_kept_nearest() -> None:
    """A flat window after a rise that never came: lags 4.. and ..-4 both fit; the one
    next to the lag in use (3) wins, not the one on the other side of zero."""
    f = np.full(96, 0.1)
    f[16:24] = 0.8
    w = np.arange(12, 20)
    assert phase_lag(np.full(8, 0.1), f, w, current=3) == 4
