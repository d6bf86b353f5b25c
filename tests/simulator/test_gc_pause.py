"""The replay pauses Python's cycle collector and leaves it as it found it."""

from __future__ import annotations

import gc

import pytest

from gsched.models import Cluster, Job, Node, Trace
from gsched.scheduler.policies.registry import make_policy
from gsched.simulator.engine import simulate
from gsched.simulator.gc_pause import collector_paused


@pytest.fixture
def restore_gc():
    was = gc.isenabled()
    yield
    (gc.enable if was else gc.disable)()


@pytest.mark.parametrize("enabled", [True, False])
def test_collector_is_paused_inside_and_restored_after(restore_gc, enabled):
    (gc.enable if enabled else gc.disable)()
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled() is enabled
    with pytest.raises(RuntimeError), collector_paused():
        raise RuntimeError("boom")
    assert gc.isenabled() is enabled


def test_simulate_leaves_the_collector_on(restore_gc):
    gc.enable()
    cl = Cluster(nodes=[Node(name="n0", gpu_count=2, gpu_model="A100")])
    tr = Trace(jobs=[Job(id="a", kind="training", submit_time=0, duration=60, num_gpu=1)])
    f = simulate(tr, cl, make_policy("binpack")).figures
    assert f["completed_training_jobs"] == 1
    assert gc.isenabled()
