"""Inflation mode on workloads whose allocation at 100% is known by hand."""

from __future__ import annotations

import pytest

from gsched.models import Cluster, Job, Node, Trace
from gsched.scheduler.policies.policy import PolicyConfig
from gsched.scheduler.policies.registry import POLICIES, make_policy
from gsched.simulator.inflation import inflate


def pods(share: float, n: int = 3) -> Trace:
    return Trace(jobs=[Job(id=f"p{i}", kind="inference", submit_time=0, gpu_share=share)
                       for i in range(n)])


def two_gpus() -> Cluster:
    return Cluster(nodes=[Node(name="n0", gpu_count=2)])


@pytest.mark.parametrize("policy", list(POLICIES))
def test_whole_gpu_pods_allocate_everything_and_fragment_nothing(policy):
    tr = pods(1.0)
    r = inflate(tr, two_gpus(), lambda: make_policy(policy, PolicyConfig(workload=tr.jobs)),
                seeds=3)
    assert r.allocation_ratio_at_100 == pytest.approx(1.0)
    assert r.fragmented_gpu_share == pytest.approx(0.0)
    assert r.seeds == 3


@pytest.mark.parametrize("policy", list(POLICIES))
def test_pods_of_sixty_percent_strand_forty_percent_of_each_gpu(policy):
    # One 0.6 pod per GPU; requests reach 100% at the 4th pod (2.4 >= 2 GPUs).
    tr = pods(0.6)
    r = inflate(tr, two_gpus(), lambda: make_policy(policy, PolicyConfig(workload=tr.jobs)),
                seeds=2)
    assert r.allocation_ratio_at_100 == pytest.approx(0.6)
    assert r.fragmented_gpu_share == pytest.approx(0.4)
    assert r.figures["failed_pods_at_100"] == pytest.approx(2.0)


def test_seeds_are_reproducible_and_differ_from_each_other():
    tr = Trace(jobs=[Job(id=f"p{i}", kind="inference", submit_time=0, gpu_share=s)
                     for i, s in enumerate([0.1, 0.3, 0.5, 0.7, 1.0])])
    cl = Cluster(nodes=[Node(name=f"n{i}", gpu_count=4) for i in range(4)])
    make = lambda: make_policy("k8s-spread", PolicyConfig(workload=tr.jobs))  # noqa: E731
    a = inflate(tr, cl, make, seeds=4)
    b = inflate(tr, cl, make, seeds=4)
    assert [s["allocation_ratio_at_100"] for s in a.per_seed] == \
        [s["allocation_ratio_at_100"] for s in b.per_seed]
    assert len({s["allocation_ratio_at_100"] for s in a.per_seed}) > 1


def test_each_seed_has_its_own_fixed_random_node_order():
    from gsched.simulator.inflation import seed_node_order

    cl = Cluster(nodes=[Node(name=f"n{i}", gpu_count=1) for i in range(12)])
    names = [[n.name for n in seed_node_order(cl, s).nodes] for s in (0, 0, 1)]
    assert names[0] == names[1] and names[0] != names[2]
    assert sorted(names[0]) == sorted(n.name for n in cl.nodes)


def test_per_seed_figures_are_reported():
    # half-GPU pods on two one-GPU nodes: gpupacking shares the used GPU first, so the
    # halves pair up and both GPUs are fully allocated when requests reach 100%
    tr = Trace(jobs=[Job(id="h", kind="inference", submit_time=0, gpu_share=0.5)])
    cl = Cluster(nodes=[Node(name=f"n{i}", gpu_count=1) for i in range(2)])
    r = inflate(tr, cl, lambda: make_policy("gpupacking"), seeds=3)
    per_seed = r.figures["allocation_ratio_at_100_per_seed"]
    assert per_seed == [s["allocation_ratio_at_100"] for s in r.per_seed]
    assert per_seed == pytest.approx([1.0, 1.0, 1.0])   # halves pair up on one GPU
