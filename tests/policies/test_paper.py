"""The FGD paper's six policies against scores worked out by hand from the artifact's
definitions (docs/policies.md)."""

from __future__ import annotations

import numpy as np
import pytest

from gsched.models import Cluster, Job, Node
from gsched.scheduler.policies.fgd_paper import TargetPods, sigmoid_score
from gsched.scheduler.policies.paper import normalize_min_max
from gsched.scheduler.policies.policy import PolicyConfig, place
from gsched.scheduler.policies.registry import make_policy
from gsched.scheduler.policies.state import ClusterState, Placement


def pod(jid: str, share: float = 1.0, n: int = 1, cpu: int = 1000) -> Job:
    return Job(id=jid, kind="inference", submit_time=0, num_gpu=n, gpu_share=share,
               cpu_milli=cpu)


def cpu_pod(jid: str, cpu: int = 1000) -> Job:
    return Job(id=jid, kind="inference", submit_time=0, num_gpu=0, cpu_milli=cpu)


def nodes(*spec: tuple[int, int]) -> ClusterState:
    """Nodes of (GPUs, milli-CPU)."""
    return ClusterState(Cluster(nodes=[Node(name=f"n{i}", gpu_count=g, cpu_milli=c)
                                       for i, (g, c) in enumerate(spec)]))


def scores(policy: str, st: ClusterState, job: Job, workload: list[Job] | None = None
           ) -> list[float]:
    pol = make_policy(policy, PolicyConfig(workload=workload or [job]))
    return pol.score(st, job, pol.feasible(st, job)).tolist()


def test_dotprod_is_one_minus_half_the_normalised_dot_product():
    st = nodes((2, 64000), (8, 128000))
    # node 0: (64000/128000)(8000/128000) + (2000/8000)(1000/8000) = 0.0625 -> 100(1-0.03125)
    # node 1: (1)(0.0625) + (1)(0.125) = 0.1875 -> 100 (1 - 0.09375) = 90.6 -> 90
    assert scores("dotprod", st, pod("p", cpu=8000)) == [96, 90]


def test_clustering_tiers_same_shape_alone_then_mixed_then_empty_then_other():
    st = nodes((8, 96000), (8, 96000), (8, 96000), (8, 96000))
    st.allocate(pod("a", 0.5), Placement(0, (0,), 0.5))       # node 0: shared only
    st.allocate(pod("b", 0.5), Placement(1, (0,), 0.5))       # node 1: shared + 1-GPU
    st.allocate(pod("c"), Placement(1, (1,), 1.0))
    st.allocate(pod("d"), Placement(3, (0,), 1.0))            # node 3: 1-GPU only
    # fill = 25 * (8000 - free milli) // 8000: node 0 and 3 -> 1 or 3, node 1 -> 4
    assert scores("clustering", st, pod("p", 0.25)) == [75 + 1, 50 + 4, 25 + 0, 0 + 3]
    assert scores("clustering", st, cpu_pod("q")) == [0, 0, 0, 0]


def test_gpupacking_prefers_a_shared_gpu_then_a_used_node_then_an_empty_one():
    st = nodes((8, 96000), (8, 96000), (8, 96000))
    st.allocate(pod("a", 0.5), Placement(0, (0,), 0.5))       # a GPU with 500 milli left
    st.allocate(pod("b"), Placement(1, (0,), 1.0))            # used node, whole GPUs free
    # shared GPU: 100 - (500 * 100 // 1000) // 10 = 95; free GPU on used node: 50 - 1;
    # empty 8-GPU node: max(33 - 8, 8) = 25
    assert scores("gpupacking", st, pod("p", 0.25)) == [95, 49, 25]
    assert scores("gpupacking", st, pod("w", n=2)) == [48, 48, 25]


def test_bestfit_scores_cpu_only_pods_by_gpu_left_too():
    st = nodes((8, 96000), (8, 96000))
    for g in range(8):
        st.allocate(pod(f"f{g}"), Placement(1, (g,), 1.0))    # node 1: every GPU taken
    # raw: node 0 int((1 - (0.5*95000/128000 + 0.5*8000/8000)) * 100) = 12; node 1: 62
    assert scores("bestfit", st, cpu_pod("c")) == [0, 100]
    d = place(make_policy("bestfit"), st, cpu_pod("c"))
    assert d.node == 1   # beside the full GPUs, not stranding a free node's GPUs


def test_min_max_normalisation_is_integer_and_over_feasible_nodes_only():
    raw = np.array([50, 60, 73, 999])
    ok = np.array([True, True, True, False])
    assert normalize_min_max(raw, ok).tolist() == [0, 43, 100, 0]   # 10*100//23 = 43
    assert normalize_min_max(np.array([7, 7]), np.array([True, True])).tolist() == [0, 0]


def test_random_draws_only_feasible_nodes_and_repeats_under_one_seed():
    st = nodes((1, 0), (1, 0), (1, 0), (1, 0))
    st.allocate(pod("x"), Placement(2, (0,), 1.0))            # node 2 is full
    pol = make_policy("random")
    picks = []
    for seed in (1, 1, 2):
        pol.reseed(seed)
        picks.append([place(pol, st, pod(f"p{i}")).node for i in range(40)])
    assert picks[0] == picks[1] and picks[0] != picks[2]
    assert set(picks[0]) == {0, 1, 3}


def test_ties_go_to_the_first_node_in_order():
    st = nodes((2, 0), (2, 0), (2, 0))
    for policy in ("dotprod", "gpupacking", "bestfit", "fgd"):
        assert place(make_policy(policy), st, pod("p", 0.5)).node == 0, policy


def test_target_pods_keep_the_most_popular_shapes_up_to_95_percent():
    jobs = ([pod(f"a{i}", 0.5) for i in range(60)] + [pod(f"b{i}") for i in range(35)]
            + [cpu_pod(f"c{i}") for i in range(4)] + [pod("d", 0.25)])
    t = TargetPods.from_jobs(jobs)
    assert t.milli.tolist() == [500, 1000]       # 60% + 35% reach 95%: the rest left out
    assert t.weight.tolist() == pytest.approx([60 / 95, 35 / 95])


def test_fgd_counts_every_free_gpu_as_fragment_for_cpu_only_shapes():
    t = TargetPods.from_jobs([cpu_pod("c", cpu=1000), pod("h", 0.5, cpu=1000)],
                             popularity=1.0)
    left = np.array([[1000, 300], [1000, -1]])
    acc = np.ones((2, 2), dtype=bool)
    cpu = np.array([8000.0, 500.0])
    # node 0: CPU-only half: all 1300; half-GPU half: the 300 GPU -> (1300 + 300) / 2
    # node 1: CPU-only half: 1000; the half-GPU shape lacks CPU -> all 1000 -> 1000
    assert t.fragmentation(left, cpu, acc).tolist() == pytest.approx([800.0, 1000.0])


def test_fgd_score_is_the_banded_sigmoid_of_the_milli_gpu_delta():
    assert sigmoid_score(np.array([0.0, 1000.0, -1000.0, 30.0])).tolist() == [50, 73, 26, 50]
    st = nodes((1, 0), (1, 0))
    st.allocate(pod("x", 0.5), Placement(0, (0,), 0.5))
    workload = [pod("w", 0.5)]
    # node 0: 500 left, fits a half: F 0 -> 0 after filling it (the hole is used up) -> 50
    # node 1: F 0 -> 0 (500 left still fits a half) -> 50: a tie, node order decides
    assert scores("fgd", st, pod("y", 0.5), workload) == [50, 50]
    # whole-GPU workload: node 0's 500 is a fragment; filling it removes it: dF = +500
    assert scores("fgd", st, pod("y", 0.5), [pod("w")]) == [62, 37]
