"""The leader's re-plan loop: CP-SAT targets on the state, moves through evictions."""

from __future__ import annotations

import pytest
from fake_kube_api import FakeKubeAPI, node, pod

from gsched.scheduler.extender.kube import pod_evictor
from gsched.scheduler.extender.replanner import LeaderReplanner

FLAT = ";".join(["0.5"] * 96)


@pytest.fixture
def cluster():
    api = FakeKubeAPI().start()
    api.put_node(node("n1", gpus=3))
    api.put_pod(pod("web", "u-web", milli=500, node_name="n1", phase="Running",
                    annotations={"gsched.io/kind": "inference", "gsched.io/profile": FLAT,
                                 "gsched.io/gpus": "0"}))
    api.put_pod(pod("train", "u-train", milli=1000, node_name="n1", phase="Running",
                    annotations={"gsched.io/kind": "training", "gsched.io/gpus": "1",
                                 "gsched.io/utilization": "0.4"}))
    core, ext, sync = api.synced_extender()
    assert api.wait_for(lambda: {"u-web", "u-train"} <= set(ext.state.running))
    yield api, core, ext
    sync.stop()
    api.stop()


def test_the_leader_plans_and_moves_training_beside_inference(cluster):
    api, core, ext = cluster
    now = [1_800_000_000.0]
    rp = LeaderReplanner(ext, pod_evictor(core), every_s=900, move_budget=2,
                         time_limit=1.0, clock=lambda: now[0])
    assert rp.step() == [("default", "train")]
    assert api.evictions == [("default", "train")]
    assert ext.state.plan["u-web"] == (0, (0,))
    assert ext.state.plan["u-train"] == (0, (0,))
    assert rp.workload_targets  # the replacement pod inherits the target
    m = ext.metrics
    assert m.replans.labels(outcome="ok")._value.get() == 1
    assert m.replan_moves._value.get() == 1
    now[0] += 60
    assert rp.step() == []  # not due: no large change, a minute after the last plan


def test_followers_do_not_plan(cluster):
    api, core, ext = cluster
    rp = LeaderReplanner(ext, pod_evictor(core), is_leader=lambda: False)
    assert rp.step() == [] and ext.state.plan == {} and api.evictions == []


def test_no_move_budget_plans_without_moving(cluster):
    api, core, ext = cluster
    rp = LeaderReplanner(ext, pod_evictor(core), move_budget=0, time_limit=1.0)
    assert rp.step() == []
    assert api.evictions == []
    assert ext.state.plan["u-train"] == (0, (1,))
