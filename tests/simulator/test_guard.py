"""The load guard and the promised window, on traces whose answers follow by hand."""

from __future__ import annotations

import numpy as np
import pytest

from gsched.models import Cluster, Job, Node, Trace
from gsched.scheduler.policies.policy import PolicyConfig
from gsched.scheduler.policies.registry import make_policy
from gsched.simulator.engine import SimConfig, Simulation
from gsched.simulator.guard import GuardConfig
from gsched.simulator.load import LoadDeviation


def one_gpu() -> Cluster:
    return Cluster(nodes=[Node(name="n0", gpu_count=1, gpu_model="A100")],
                   prices={"A100": 1.0})


def svc(prof: np.ndarray) -> Job:
    return Job(id="svc", kind="inference", submit_time=0, profile=prof, priority=100)


def train(util: float, dur: float = 20000.0) -> Job:
    return Job(id="train", kind="training", submit_time=0, duration=dur, preemptible=True,
               utilization=util)


def run(jobs: list[Job], **cfg: object) -> Simulation:
    tr = Trace(jobs=jobs, source="hand")
    s = Simulation(tr, one_gpu(), make_policy("tidal", PolicyConfig(headroom=0.1)),
                   SimConfig(**cfg))
    s.run()
    return s


SURGE = LoadDeviation(surge=1.0, surge_start_slot=8, surge_slots=4)  # 02:00-03:00, x2


def test_guard_evicts_training_within_one_report_and_bounds_the_risk() -> None:
    jobs = [svc(np.full(96, 0.5)), train(0.3)]
    without = run(jobs, deviation=SURGE, until_s=40000)
    with_guard = run(jobs, deviation=SURGE, guard=GuardConfig(report_interval_s=10),
                     until_s=40000)
    f0, f1 = without._result(0, 1.0).figures, with_guard._result(0, 1.0).figures
    # Without the guard the GPU is at 1.3 for the whole surge hour.
    assert f0["slo_risk_slot_minutes"] == pytest.approx(60.0)
    assert f0["preemptions"] == 0
    # With it, training leaves at the first report after 02:00 (7205 s): 5 s over.
    assert f1["guard_evictions"] == 1
    assert f1["slo_risk_slot_minutes"] == pytest.approx(5 / 60)
    assert f1["evictions_per_training_job"] == 1.0
    assert f1["guard_gpu_blocks"] == 1


def test_guard_closes_the_gpu_until_the_load_recedes() -> None:
    jobs = [svc(np.full(96, 0.5)), train(0.3)]
    s = run(jobs, deviation=SURGE, guard=GuardConfig(report_interval_s=10))
    job = s.runs["train"]
    # The surge (inference alone at 1.0, over the recede line 0.9) lasts until 03:00;
    # training restarts only at the first report after it, 10805 s.
    assert job.run_start == pytest.approx(10805.0)
    assert not s.state.blocked.any()
    f = s._result(0, 1.0).figures
    assert f["completed_training_jobs"] == 1
    assert f["gpu_hours_lost_share"] == pytest.approx(
        (5 + 120) / 3600 / f["training_gpu_hours"])


def test_no_guard_action_when_load_is_as_forecast() -> None:
    s = run([svc(np.full(96, 0.5)), train(0.3)], guard=GuardConfig())
    f = s._result(0, 1.0).figures
    assert f["guard_evictions"] == 0 and f["guard_gpu_blocks"] == 0
    assert f["evictions_per_training_job"] == 0.0


def _peak_at_one_hour() -> np.ndarray:
    prof = np.full(96, 0.2)
    prof[4:12] = 0.45  # 01:00-03:00: forecast 0.95 with training, over cap 0.9
    return prof


def test_promised_window_defers_planned_moves_until_it_runs_out() -> None:
    jobs = [svc(_peak_at_one_hour()), train(0.5)]
    plain = run(jobs, guard=GuardConfig(promise_s=0))
    promised = run(jobs, guard=GuardConfig(promise_s=7200))
    fp, fq = plain._result(0, 1.0).figures, promised._result(0, 1.0).figures
    assert fp["planned_preemptions"] == 1 and fp["promise_deferred_moves"] == 0
    # Moves asked at 01:00, 01:15, 01:30, 01:45 wait; the one at 02:00 goes ahead.
    assert fq["promise_deferred_moves"] == 4
    assert fq["planned_preemptions"] == 1
    assert fq["guard_evictions"] == 0  # 0.95 measured is under the 1.0 safe line


def test_a_promise_never_holds_training_on_a_gpu_forecast_over_the_line() -> None:
    prof = np.full(96, 0.2)
    prof[4:12] = 0.6  # 1.1 with training from 01:00: moved as planned, not evicted
    s = run([svc(prof), train(0.5)], guard=GuardConfig(promise_s=7200))
    f = s._result(0, 1.0).figures
    assert f["planned_preemptions"] == 1 and f["promise_deferred_moves"] == 0
    assert f["guard_evictions"] == 0 and f["slo_risk_slot_minutes"] == 0


def test_the_guard_breaks_the_promise_when_the_forecast_was_wrong() -> None:
    jobs = [svc(np.full(96, 0.5)), train(0.3)]
    s = run(jobs, deviation=SURGE, guard=GuardConfig(report_interval_s=10, promise_s=36000))
    f = s._result(0, 1.0).figures
    assert f["guard_evictions"] == 1
    assert f["slo_risk_slot_minutes"] == pytest.approx(5 / 60)


def test_a_gpu_measured_well_over_its_forecast_takes_no_new_work() -> None:
    # The service doubles (0.3 -> 0.6) during the surge: with the training beside it
    # 0.7, under the recede line, but 0.3 over its forecast, so the guard closes the GPU
    # while the surge lasts, and evicts nothing.
    jobs = [svc(np.full(96, 0.3)), train(0.1)]
    s = run(jobs, deviation=SURGE, guard=GuardConfig(), until_s=9000)
    assert s.state.blocked[0, 0]
    after = run(jobs, deviation=SURGE, guard=GuardConfig(), until_s=11000)
    assert not after.state.blocked.any()
    assert after._result(0, 1.0).figures["guard_evictions"] == 0


def test_under_a_surprise_surge_the_reserve_keeps_tidal_at_peaks_risk() -> None:
    """Two anti-phase services and a training job on three GPUs; every service surges
    +50 % for 2 h over the day service's peak. `tidal` sharing inference by profile
    overloads the shared GPU for the whole surge (nothing there can be evicted); with
    the inference reserve it keeps the services apart, like `peak`, and the guard takes
    the training beside the surging service away within one report interval."""
    def bump(hour: float) -> np.ndarray:
        h = np.arange(96) / 4
        d = np.minimum(np.abs(h - hour), 24 - np.abs(h - hour))
        return np.maximum(0.15, np.exp(-(d / 4) ** 2))

    jobs = [Job(id="day", kind="inference", submit_time=0, gpu_share=0.6, profile=bump(14),
                priority=100),
            Job(id="night", kind="inference", submit_time=0, gpu_share=0.6,
                profile=bump(2), priority=100),
            Job(id="t", kind="training", submit_time=0, duration=40 * 3600.0,
                preemptible=True, utilization=0.3)]
    cl = Cluster(nodes=[Node(name="n0", gpu_count=3, gpu_model="A100")],
                 prices={"A100": 1.0})
    surge = LoadDeviation(surge=0.5, surge_start_slot=52, surge_slots=8)  # 13:00-15:00
    guard = GuardConfig(report_interval_s=10)

    def figures(policy: str, reserve: float) -> dict:
        s = Simulation(Trace(jobs=jobs, source="hand"), cl,
                       make_policy(policy, PolicyConfig(headroom=0.1,
                                                        inference_reserve=reserve)),
                       SimConfig(deviation=surge, guard=guard, until_s=86400.0))
        s.run()
        return s._result(0, 1.0).figures

    peak, shared, reserved = figures("peak", 0.0), figures("tidal", 0.0), figures("tidal", 0.5)
    assert shared["slo_risk_slot_minutes"] >= 60  # the shared GPU, over for the surge
    assert reserved["slo_risk_slot_minutes"] <= peak["slo_risk_slot_minutes"]
    # what risk is left is the guard's reaction: under one report interval per eviction
    assert reserved["guard_evictions"] >= 1
    assert reserved["slo_risk_slot_minutes"] * 60 <= 10 * reserved["guard_evictions"]


def _valley_from_two() -> np.ndarray:
    prof = np.full(96, 0.2)
    prof[:8] = 0.8  # forecast: busy until 02:00, then a valley training fits in
    return prof


LATE = LoadDeviation(shift_slots=4)  # the real peak ends an hour later, at 03:00


@pytest.mark.parametrize("verify", [False, True])
def test_a_valley_the_forecast_opens_is_measured_before_training_enters(verify) -> None:
    """At 02:00 the forecast says valley, but the agents last measured 0.8. Trusting the
    forecast admits the training at 02:00 and the guard evicts it at the first report
    (02:00:05): five seconds at 1.3. Verifying the valley closes the GPU at the boundary;
    the training starts at the first report after the real valley begins (03:00:05)."""
    s = run([svc(_valley_from_two()), train(0.5)], deviation=LATE, until_s=20000,
            guard=GuardConfig(report_interval_s=10, verify_valleys=verify, rephase=False))
    f = s._result(0, 1.0).figures
    if not verify:
        assert f["guard_evictions"] == 1
        assert f["slo_risk_slot_minutes"] == pytest.approx(5 / 60)
        assert f["guard_boundary_closures"] == 0
        return
    assert f["guard_evictions"] == 0 and f["slo_risk_slot_minutes"] == 0
    assert f["guard_boundary_closures"] == 1
    assert s.runs["train"].first_start == pytest.approx(10805.0)


def test_a_valley_that_is_real_reopens_at_the_next_report() -> None:
    """With the forecast right, the boundary closure costs one report interval: the
    training starts at 02:00:05, the first report of the valley, and nothing is over."""
    s = run([svc(_valley_from_two()), train(0.5)], until_s=20000,
            guard=GuardConfig(report_interval_s=10))
    f = s._result(0, 1.0).figures
    assert f["guard_boundary_closures"] == 1 and f["guard_evictions"] == 0
    assert s.runs["train"].first_start == pytest.approx(7205.0)
    assert f["slo_risk_slot_minutes"] == 0


def test_work_moved_out_at_the_boundary_does_not_close_the_gpu_it_left() -> None:
    """Training on the GPU until a forecast peak: the planned move at the boundary takes
    its load off the measurement, so the GPU the forecast says is busy is not also closed
    as unproven (nothing to verify: the forecast went up, not down)."""
    prof = np.full(96, 0.2)
    prof[8:16] = 0.45  # 02:00-04:00: 0.95 with the training, over 0.9: it moves out
    s = run([svc(prof), train(0.5)], until_s=9000, guard=GuardConfig(promise_s=0))
    f = s._result(0, 1.0).figures
    assert f["planned_preemptions"] == 1
    assert f["guard_boundary_closures"] == 0 and not s.state.blocked.any()


def test_a_late_day_is_booked_late_a_slot_at_a_time() -> None:
    """The service's day runs an hour late. Its forecast rise at 04:00 does not come, so
    from 04:15 its booking moves a slot later at each boundary until the measured rise
    (05:00) pins it at four slots; the training moved out at 04:00 comes back only after
    the real peak (07:00), and nothing is ever over."""
    prof = np.full(96, 0.2)
    prof[16:24] = 0.8  # forecast busy 04:00-06:00; really 05:00-07:00
    s = run([svc(prof), train(0.5, dur=40000.0)], deviation=LATE, until_s=30000,
            guard=GuardConfig(promise_s=0))
    f = s._result(0, 1.0).figures
    assert f["rephased_bookings"] == 4
    assert np.allclose(s.state.running["svc"].load, np.roll(prof, 4))
    assert f["guard_evictions"] == 0 and f["slo_risk_slot_minutes"] == 0
    assert f["planned_preemptions"] == 1
    assert s.runs["train"].run_start == pytest.approx(7 * 3600 + 5.0)


def test_without_deviation_no_booking_moves() -> None:
    prof = np.full(96, 0.2)
    prof[16:24] = 0.8
    s = run([svc(prof), train(0.5, dur=40000.0)], until_s=30000, guard=GuardConfig())
    assert s._result(0, 1.0).figures["rephased_bookings"] == 0
