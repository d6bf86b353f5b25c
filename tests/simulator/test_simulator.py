"""The simulator's figures on traces whose answers are computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from gsched.models import Cluster, Job, Node, Trace
from gsched.scheduler.policies.policy import PolicyConfig
from gsched.scheduler.policies.registry import POLICIES, make_policy
from gsched.simulator.accounting import slot_durations
from gsched.simulator.colocation import BUILTIN, fit_lucid
from gsched.simulator.engine import SimConfig, simulate
from gsched.simulator.load import LoadDeviation


def one_node(gpus: int) -> Cluster:
    return Cluster(nodes=[Node(name="n0", gpu_count=gpus, gpu_model="A100")],
                   prices={"A100": 1.0})


def tj(jid, t, dur, n=1, share=1.0, **kw) -> Job:
    return Job(id=jid, kind="training", submit_time=t, duration=dur, num_gpu=n,
               gpu_share=share, preemptible=True, **kw)


def sim(trace_jobs, cl, policy="binpack", **cfg):
    tr = Trace(jobs=sorted(trace_jobs, key=lambda j: j.submit_time), source="hand")
    return simulate(tr, cl, make_policy(policy, PolicyConfig(workload=tr.jobs)),
                    SimConfig(**cfg)).figures


def test_queueing_jct_makespan_and_cost_by_hand():
    # A: 1 GPU 0..3600. B: 2 GPUs, waits for A, runs 3600..5400. C: 1 GPU 600..1800.
    f = sim([tj("A", 0, 3600), tj("B", 0, 1800, n=2), tj("C", 600, 1200)], one_node(2))
    assert f["completed_training_jobs"] == 3
    assert f["queue_delay_p50_s"] == 0
    assert f["queue_delay_p99_s"] == pytest.approx(np.percentile([0, 0, 3600], 99))
    assert f["training_queue_delay_p95_s"] == pytest.approx(np.percentile([0, 0, 3600], 95))
    assert f["jct_mean_s"] == pytest.approx((3600 + 5400 + 1200) / 3)
    assert f["makespan_s"] == pytest.approx(5400)
    busy = 600 * 1 + 1200 * 2 + 1800 * 1 + 1800 * 2  # GPU-seconds occupied
    assert f["occupied_gpu_hours"] == pytest.approx(busy / 3600)
    assert f["cost"] == pytest.approx(busy / 3600 * 1.0)
    assert f["cost_per_experiment"] == pytest.approx(busy / 3600 / 3)
    assert f["gpu_allocation_rate"] == pytest.approx(busy / (2 * 5400))
    assert f["mean_gpu_utilization"] == pytest.approx(busy / (2 * 5400))
    assert f["slo_risk_slot_minutes"] == 0 and f["preemptions"] == 0


def test_profiles_drive_utilisation_not_requests():
    # One inference pod on a whole GPU, busy 100% for 6 hours a day, 0% otherwise.
    prof = np.zeros(96)
    prof[:24] = 1.0
    inf = Job(id="svc", kind="inference", submit_time=0, profile=prof, priority=100)
    f = sim([inf, tj("t", 0, 86400, n=1)], one_node(2), until=86400)
    assert f["gpu_allocation_rate"] == pytest.approx(1.0)
    assert f["mean_gpu_utilization"] == pytest.approx((0.25 + 1.0) / 2)
    assert f["peak_hour_gpu_utilization"] == pytest.approx(1.0)
    assert f["valley_hour_gpu_utilization"] == pytest.approx(0.5)


def test_slo_risk_counts_gpu_minutes_over_capacity_under_a_surge():
    # Two half-GPU services at 100% of their share fill one GPU exactly; a +50% surge in
    # slots 0..3 (one hour) pushes it to 150%: 60 GPU-minutes of risk in one day.
    svc = [Job(id=f"s{i}", kind="inference", submit_time=0, gpu_share=0.5, priority=100)
           for i in range(2)]
    calm = sim(svc, one_node(1), until=86400)
    surge = sim(svc, one_node(1), until=86400,
                deviation=LoadDeviation(surge=0.5, surge_start_slot=0, surge_slots=4))
    assert calm["slo_risk_slot_minutes"] == 0
    assert surge["slo_risk_slot_minutes"] == pytest.approx(60.0)
    assert surge["mean_gpu_utilization"] == pytest.approx(1.0)  # clipped at capacity


def test_inference_preempts_training_and_lost_work_is_counted():
    # T starts at 0; I (1 GPU, 3600 s) arrives at 1000 and evicts T. T loses the 1000 s
    # since its last checkpoint plus a 120 s restart, and resumes when I leaves at 4600.
    svc = Job(id="I", kind="inference", submit_time=1000, duration=3600, priority=100)
    f = sim([tj("T", 0, 7200), svc], one_node(1))
    assert f["preemptions"] == 1 and f["planned_preemptions"] == 0
    assert f["preempted_gpu_hours_lost"] == pytest.approx(1120 / 3600)
    assert f["makespan_s"] == pytest.approx(4600 + (7200 - 1000) + 1000 + 120)
    assert f["queue_delay_p50_s"] == 0


def test_colocated_training_slows_by_the_lucid_fit():
    both = [tj("a", 0, 1000, share=0.5), tj("b", 0, 1000, share=0.5)]
    f = sim(both, one_node(1))
    speed = BUILTIN.speed(1.0)
    assert speed < 1
    assert f["makespan_s"] == pytest.approx(1000 / speed)
    alone = sim([tj("a", 0, 1000, share=0.5)], one_node(1))
    assert alone["makespan_s"] == pytest.approx(1000)


def test_neighbour_leaving_speeds_the_survivor_up():
    # b leaves after 500 s of wall time; a then runs at full speed.
    f = sim([tj("a", 0, 1000, share=0.5), tj("b", 0, 500 * BUILTIN.speed(1.0), share=0.5)],
            one_node(1))
    done_by_500 = 500 * BUILTIN.speed(1.0)
    assert f["makespan_s"] == pytest.approx(500 + (1000 - done_by_500))


@pytest.mark.parametrize("policy", list(POLICIES))
def test_job_that_can_never_fit_is_reported_and_the_run_ends(policy):
    f = sim([tj("huge", 0, 100, n=4), tj("ok", 0, 100)], one_node(2), policy=policy)
    assert f["unschedulable_jobs"] == 1 and f["completed_training_jobs"] == 1


def test_job_starved_by_fragmentation_ends_the_run_as_unfinished():
    # A permanent half-GPU service on each GPU: a 2-GPU job fits the node on paper only.
    svc = [Job(id=f"s{i}", kind="inference", submit_time=0, gpu_share=0.5, priority=100)
           for i in range(2)]
    f = sim([*svc, tj("wide", 10, 100, n=2)], one_node(2), policy="k8s-spread")
    assert f["unfinished_jobs"] == 1 and f["completed_training_jobs"] == 0


def test_same_trace_same_figures():
    rng = np.random.default_rng(1)
    jobs = [tj(f"j{i}", float(rng.uniform(0, 5000)), float(rng.uniform(100, 2000)),
               share=float(rng.choice([0.25, 0.5, 1.0]))) for i in range(200)]
    a = sim(jobs, one_node(4), policy="fgd")
    b = sim(jobs, one_node(4), policy="fgd")
    a.pop("wall_seconds"), b.pop("wall_seconds")
    a.pop("events_per_second"), b.pop("events_per_second")
    assert a == b


def test_slot_durations_wrap_midnight_and_whole_days():
    d = slot_durations(86400 - 450, 86400 + 450 + 2 * 86400, 96)
    assert d.sum() == pytest.approx(900 + 2 * 86400)
    assert d[95] == pytest.approx(450 + 2 * 900) and d[0] == pytest.approx(450 + 2 * 900)


def test_lucid_fit_has_a_knee_and_slows_busy_pairs(traces_dir):
    m = fit_lucid(traces_dir / "lucid" / "colocate_info.csv")
    assert m.pairs == 1388
    assert m.speed(0.3) == pytest.approx(1.0)
    assert 0.7 < m.speed(1.0) < 0.9
    assert (m.knee, m.slope) == (BUILTIN.knee, BUILTIN.slope)


def test_timeline_follows_the_profile_through_a_quiet_day():
    # One service, no other events all day: the plot still sees its daily curve.
    prof = np.linspace(0.0, 0.95, 96)
    svc = Job(id="svc", kind="inference", submit_time=0, profile=prof, priority=100)
    tr = Trace(jobs=[svc], source="hand")
    res = simulate(tr, one_node(1), make_policy("binpack"), SimConfig(until_s=86400))
    points = res.timeline
    assert 90 <= len(points) <= 97
    for t, alloc, util in points:
        assert alloc == pytest.approx(1.0)
        assert util == pytest.approx(prof[int(t % 86400 // 900)])
