"""The leader's planner moves preemptible training out before a predicted peak."""

from __future__ import annotations

import pytest
from fake_kube_api import FakeKubeAPI, node, pod

from gsched.scheduler.extender.kube import pod_evictor
from gsched.scheduler.extender.planner import Planner

SLOT_S = 900.0
DAY0 = 1_800_000_000.0 - (1_800_000_000.0 % 86_400)  # a midnight, UTC


@pytest.fixture
def cluster():
    api = FakeKubeAPI().start()
    api.put_node(node("n1", gpus=1))
    peak = ";".join(["0.2"] * 48 + ["1.0"] * 48)  # quiet mornings, busy afternoons
    api.put_pod(pod("web", "u-web", milli=500, node_name="n1", phase="Running",
                    annotations={"gsched.io/kind": "inference", "gsched.io/profile": peak,
                                 "gsched.io/gpus": "0"}))
    api.put_pod(pod("train", "u-train", milli=500, node_name="n1", phase="Running",
                    annotations={"gsched.io/kind": "training", "gsched.io/gpus": "0"}))
    core, ext, sync = api.synced_extender()
    yield api, core, ext
    sync.stop()
    api.stop()


def test_training_is_evicted_before_the_peak_slot_and_only_once(cluster):
    api, core, ext = cluster
    now = [DAY0 + 47 * SLOT_S]  # the morning's last slot: the peak is 15 min away
    leader = [True]
    planner = Planner(ext, pod_evictor(core), is_leader=lambda: leader[0], lead_s=120,
                      clock=lambda: now[0])
    assert planner.step() == []  # slot 47 is quiet: nothing to move
    now[0] = DAY0 + 48 * SLOT_S - 60  # a minute before the peak slot
    leader[0] = False
    assert planner.step() == []  # followers never plan
    leader[0] = True
    assert planner.step() == [("default", "train")]
    assert api.evictions == [("default", "train")]
    assert api.wait_for(lambda: "u-train" not in ext.state.running)
    assert "u-web" in ext.state.running
    now[0] += 30
    assert planner.step() == []  # the coming slot is planned already
    assert ext.metrics.preemptions.labels(kind="training")._value.get() == 1


def test_a_refused_eviction_is_not_counted_and_not_fatal(cluster):
    api, core, ext = cluster
    api.refuse_evictions = True
    planner = Planner(ext, pod_evictor(core), lead_s=120,
                      clock=lambda: DAY0 + 48 * SLOT_S - 60)
    assert planner.step() == []
    assert "u-train" in ext.state.running
    assert ext.metrics.preemptions.labels(kind="training")._value.get() == 0
