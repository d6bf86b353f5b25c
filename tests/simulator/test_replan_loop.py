"""The simulator's re-plan loop: a CP-SAT plan moves training where it saves a GPU."""

from __future__ import annotations

import numpy as np

from gsched.models import Cluster, Job, Node, Trace
from gsched.scheduler.policies.policy import PolicyConfig
from gsched.scheduler.policies.registry import make_policy
from gsched.simulator.engine import SimConfig, Simulation


def _sim(replan_every: float | None) -> Simulation:
    prof = np.full(96, 0.3)
    prof[:4] = 0.9  # the service peaks 00:00-01:00, then leaves room for training
    svc = Job(id="svc", kind="inference", submit_time=0, profile=prof, priority=100)
    t = Job(id="t", kind="training", submit_time=0, duration=36000, preemptible=True,
            utilization=0.4)
    cl = Cluster(nodes=[Node(name="n0", gpu_count=2, gpu_model="A100")],
                 prices={"A100": 1.0})
    s = Simulation(Trace(jobs=[svc, t], source="hand"), cl,
                   make_policy("tidal", PolicyConfig(headroom=0.1)),
                   SimConfig(replan_every_s=replan_every, until_s=30000))
    s.run()
    return s


def test_online_only_keeps_training_on_its_own_gpu() -> None:
    s = _sim(None)
    assert s.state.running["t"].placement.gpus == (1,)
    assert "replans" not in s._result(0, 1.0).figures


def test_the_re_plan_moves_training_beside_the_service_after_its_peak() -> None:
    online, planned = _sim(None), _sim(3600.0)
    f0, f1 = online._result(0, 1.0).figures, planned._result(0, 1.0).figures
    assert planned.state.running["t"].placement.gpus == (0,)
    assert f1["replan_moves"] == 1 and f1["planned_preemptions"] == 1
    assert f1["replans"] >= 2
    # one GPU instead of two from the move on: cost falls by most of a GPU's day
    assert f1["cost"] < f0["cost"] - 5.0
    assert f1["slo_risk_slot_minutes"] == 0


def test_the_re_plan_loop_is_deterministic() -> None:
    a, b = _sim(3600.0)._result(0, 1.0).figures, _sim(3600.0)._result(0, 1.0).figures
    keys = ("cost", "replans", "replan_moves", "preemptions")
    assert [a[k] for k in keys] == [b[k] for k in keys]
