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


def _state_with_services(n: int):
    from gsched.models import Cluster, Job, Node
    from gsched.scheduler.policies.state import ClusterState, Placement

    st = ClusterState(Cluster(nodes=[Node(name="n0", gpu_count=8, gpu_model="A100")]))
    for k in range(n):
        job = Job(id=f"svc{k}", kind="inference", submit_time=0, profile=bump(44),
                  priority=100)
        st.allocate(job, Placement(0, (k,), 1.0))
    return st


def test_a_new_service_starts_at_the_lag_the_measured_ones_agree_on() -> None:
    from gsched.scheduler.policies.rephase import Rephasing

    st = _state_with_services(7)
    rp = Rephasing()
    for k in range(6):  # six measured services: five an hour late, one on time
        late = 0 if k == 5 else 4
        rp.update(st, f"svc{k}", np.roll(bump(44), late)[WINDOW], WINDOW)
    assert rp.consensus() == 4
    base = st.running["svc6"].load.copy()
    assert rp.adopt(st, "svc6", rp.consensus())
    assert np.allclose(st.running["svc6"].load, np.roll(base, 4))
    assert np.allclose(st.load[0, 6], np.roll(base, 4))  # the GPU's booking moved too
    assert not rp.adopt(st, "svc6", 4)  # once
    # its own window, when it comes, is judged from the lag it was given
    assert not rp.update(st, "svc6", np.roll(bump(44), 4)[WINDOW], WINDOW)


def test_no_consensus_without_a_quorum_or_agreement() -> None:
    from gsched.scheduler.policies.rephase import Rephasing

    st = _state_with_services(8)
    rp = Rephasing()
    for k in range(4):
        rp.update(st, f"svc{k}", np.roll(bump(44), 4)[WINDOW], WINDOW)
    assert rp.consensus() == 0  # four measured: under the quorum of five
    for k in range(4, 8):
        rp.update(st, f"svc{k}", bump(44)[WINDOW], WINDOW)
    assert rp.consensus() == 0  # four late, four on time: no two-thirds agreement


def test_an_arrival_is_booked_at_the_cluster_lag_and_judged_from_there() -> None:
    from gsched.models import Job
    from gsched.scheduler.policies.rephase import Rephasing
    from gsched.scheduler.policies.state import Placement

    st = _state_with_services(6)
    rp = Rephasing()
    for k in range(6):
        rp.update(st, f"svc{k}", np.roll(bump(44), 4)[WINDOW], WINDOW)
    train = Job(id="t", kind="training", submit_time=0, duration=10.0, utilization=0.5)
    assert rp.arrival_view(train, 96) is train and rp.settle() == 4
    new = Job(id="new", kind="inference", submit_time=0, profile=bump(44), priority=100)
    view = rp.arrival_view(new, 96)
    assert np.allclose(view.profile, np.roll(bump(44), 4)) and view.profile_name == "new@lag4"
    st.allocate(view, Placement(0, (6,), 1.0))
    assert not rp.adopt(st, "new", 4)  # already booked at the lag: nothing to move
    assert rp.tracked["new"][2] == 4 and np.allclose(rp.tracked["new"][1], bump(44))
    # its own window agrees: it stays where it is
    assert not rp.update(st, "new", np.roll(bump(44), 4)[WINDOW], WINDOW)
    # on time after all: its own window moves it back to no lag
    assert rp.update(st, "new", bump(44)[WINDOW], WINDOW)
    assert np.allclose(st.running["new"].load, bump(44))


def test_a_silent_window_does_not_fit_a_peak_that_never_came() -> None:
    """The forecast's bump sits in the window but the service measured nothing there:
    scaling the forecast to zero would fit it at no lag. Scales stay within 0.5-2x, so
    the bump is read as late and the booking moves past the window."""
    f = np.full(96, 0.0)
    f[62:65] = 0.6
    w = np.arange(58, 66)
    assert phase_lag(np.zeros(8), f, w) >= 4  # the bump moved past the window's end
