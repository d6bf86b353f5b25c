"""Victim selection: fewest victims, only lower-priority preemptible jobs, state untouched."""

from __future__ import annotations

import numpy as np
import pytest

from gsched.models import Cluster, Job, Node
from gsched.scheduler.policies.preemption import find_victims
from gsched.scheduler.policies.registry import make_policy
from gsched.scheduler.policies.state import ClusterState, Placement


def train(jid: str, share: float = 1.0, priority: int = 0, preemptible: bool = True) -> Job:
    return Job(id=jid, kind="training", submit_time=0, duration=100, gpu_share=share,
               priority=priority, preemptible=preemptible)


def service(jid: str = "svc", share: float = 1.0) -> Job:
    return Job(id=jid, kind="inference", submit_time=0, gpu_share=share, priority=100)


def setup() -> ClusterState:
    st = ClusterState(Cluster(nodes=[Node(name="a", gpu_count=1), Node(name="b", gpu_count=1),
                                     Node(name="c", gpu_count=1)]))
    # a: two half-GPU training jobs; b: one whole training job; c: an inference service
    st.allocate(train("a1", 0.5), Placement(0, (0,), 0.5))
    st.allocate(train("a2", 0.5), Placement(0, (0,), 0.5))
    st.allocate(train("b1"), Placement(1, (0,), 1.0))
    st.allocate(service("c1"), Placement(2, (0,), 1.0))
    return st


@pytest.mark.parametrize("policy", ["binpack", "k8s-spread", "peak", "tidal"])
def test_the_node_needing_fewest_victims_wins_and_state_is_untouched(policy):
    st = setup()
    before = (st.free.copy(), st.load.copy(), dict(st.running))
    found = find_victims(make_policy(policy), st, service("new"), started=lambda j: 0.0)
    assert found == (1, ["b1"])
    assert np.array_equal(st.free, before[0]) and np.array_equal(st.load, before[1])
    assert st.running.keys() == before[2].keys()


def test_a_half_gpu_needs_only_the_newest_half_gpu_victim():
    st = setup()
    st.release("b1")
    st.allocate(train("b1", priority=5, preemptible=False), Placement(1, (0,), 1.0))
    started = {"a1": 10.0, "a2": 20.0}
    found = find_victims(make_policy("binpack"), st, service("new", 0.5), started.__getitem__)
    assert found == (0, ["a2"])  # a2 started last: least work lost


def test_inference_and_equal_priority_jobs_are_never_victims():
    st = ClusterState(Cluster(nodes=[Node(name="a", gpu_count=1)]))
    st.allocate(train("peer", priority=100), Placement(0, (0,), 1.0))
    assert find_victims(make_policy("binpack"), st, service("new"), lambda j: 0.0) is None
    st.release("peer")
    st.allocate(service("old"), Placement(0, (0,), 1.0))
    assert find_victims(make_policy("binpack"), st, service("new"), lambda j: 0.0) is None
