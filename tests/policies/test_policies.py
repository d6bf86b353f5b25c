"""Each policy's placement on small clusters whose right answer is worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gsched.models import Cluster, Job, Node
from gsched.scheduler.policies.fgd import TaskTypes
from gsched.scheduler.policies.policy import PolicyConfig, normalized_scores, place
from gsched.scheduler.policies.registry import POLICIES, make_policy, policy_names
from gsched.scheduler.policies.state import ClusterState, NoFit, Placement, Reason


def job(jid: str, share: float = 1.0, n: int = 1, **kw) -> Job:
    return Job(id=jid, kind=kw.pop("kind", "training"), submit_time=0, duration=10,
               num_gpu=n, gpu_share=share, **kw)


def cluster(*gpus: int, model: str = "A100", cpu: int = 0) -> Cluster:
    return Cluster(nodes=[Node(name=f"n{i}", gpu_count=g, gpu_model=model, cpu_milli=cpu)
                          for i, g in enumerate(gpus)])


def run(policy: str, cl: Cluster, jobs: list[Job], workload: list[Job] | None = None
        ) -> tuple[ClusterState, list[Placement | NoFit]]:
    st = ClusterState(cl)
    pol = make_policy(policy, PolicyConfig(workload=workload or jobs))
    out = []
    for j in jobs:
        d = place(pol, st, j)
        if isinstance(d, Placement):
            st.allocate(j, d)
        out.append(d)
    return st, out


def test_k8s_spread_prefers_the_emptiest_node():
    _, out = run("k8s-spread", cluster(4, 4), [job("a"), job("b"), job("c")])
    assert [p.node for p in out] == [0, 1, 0]


def test_binpack_fills_one_node_before_the_next():
    _, out = run("binpack", cluster(4, 4), [job("a"), job("b"), job("c")])
    assert [p.node for p in out] == [0, 0, 0]


def test_bestfit_picks_the_tightest_node_and_gpu():
    st = ClusterState(cluster(2, 2))
    pol = make_policy("bestfit")
    st.allocate(job("x", 0.75), Placement(1, (1,), 0.75))  # node 1 GPU 1: 0.25 left
    d = place(pol, st, job("y", 0.25))
    assert (d.node, d.gpus) == (1, (1,))  # exactly fills the 0.25 hole


def test_peak_reserves_the_daily_peak_not_the_request_and_first_fits():
    prof = np.full(96, 0.2)
    prof[40:48] = 0.5
    st, out = run("peak", cluster(1, 1), [job("a", 1.0, profile=prof, kind="inference"),
                                         job("b", 1.0, profile=prof, kind="inference")])
    assert [(p.node, p.reserved) for p in out] == [(0, 0.5), (0, 0.5)]
    assert st.free[0, 0] == pytest.approx(0.0)


def test_fgd_prefers_node_that_fragments_least():
    # node 0 has half a GPU free, node 1 a whole one; the workload is half and whole GPUs.
    workload = [job("w1", 0.5), job("w2", 1.0)]
    st = ClusterState(cluster(1, 1))
    st.allocate(job("x", 0.5), Placement(0, (0,), 0.5))
    fgd = make_policy("fgd", PolicyConfig(workload=workload))
    spread = make_policy("k8s-spread", PolicyConfig(workload=workload))
    assert place(fgd, st, job("y", 0.5)).node == 0       # fills the hole: delta -0.25
    assert place(spread, st, job("y", 0.5)).node == 1    # spreads: leaves two halves


def test_fgd_fragmentation_matches_the_papers_definition():
    types = TaskTypes.from_jobs([job("a", 0.5), job("b", 1.0)])
    free = np.array([[0.5, 1.0], [0.3, -1.0]])  # node 1 has one GPU (padding -1)
    frag = types.fragmentation(free, np.array([0.0, 0.0]), np.array([True, True]))
    # node 0: half-GPU task fragments nothing; whole-GPU task cannot use the 0.5 -> 0.5*0.5
    # node 1: neither task fits anywhere -> all 0.3 fragmented for both types
    assert frag == pytest.approx([0.25, 0.3])


@pytest.mark.parametrize("policy", list(POLICIES))
def test_multi_gpu_job_stays_inside_one_node(policy):
    st, out = run(policy, cluster(2, 4), [job("a", n=3)])
    assert out[0].node == 1 and len(set(out[0].gpus)) == 3


@pytest.mark.parametrize("policy", list(POLICIES))
def test_gpu_model_constraint_is_respected(policy):
    cl = Cluster(nodes=[Node(name="t4", gpu_count=2, gpu_model="T4"),
                        Node(name="a100", gpu_count=2, gpu_model="A100")])
    _, out = run(policy, cl, [job("a", gpu_models=("A100",))])
    assert out[0].node == 1


@pytest.mark.parametrize("policy", list(POLICIES))
def test_job_larger_than_any_node_gets_a_reason_not_an_exception(policy):
    _, out = run(policy, cluster(2, 4), [job("big", n=8)])
    assert isinstance(out[0], NoFit)
    assert out[0].reasons == {Reason.GPU_COUNT.message: 2}


@pytest.mark.parametrize("policy", list(POLICIES))
def test_shared_gpu_is_not_overbooked(policy):
    st, out = run(policy, cluster(1), [job("a", 0.6), job("b", 0.6), job("c", 0.4)])
    assert isinstance(out[1], NoFit) and isinstance(out[2], Placement)
    assert st.free[0, 0] == pytest.approx(0.0)


def test_cpu_limits_placement_and_is_explained():
    cl = cluster(2, 2, cpu=4000)
    st, out = run("binpack", cl, [job("a", cpu_milli=3000), job("b", cpu_milli=3000),
                                  job("c", cpu_milli=3000)])
    assert [getattr(p, "node", None) for p in out] == [0, 1, None]
    assert out[2].reasons == {Reason.CPU.message: 2}


def test_release_restores_an_empty_gpu_exactly():
    st = ClusterState(cluster(1))
    for i, s in enumerate([0.1, 0.2, 0.3]):
        st.allocate(job(f"j{i}", s), Placement(0, (0,), s))
    for i in range(3):
        st.release(f"j{i}")
    assert st.free[0, 0] == 1.0 and st.load[0, 0].sum() == 0.0


def test_normalized_scores_rank_the_feasible_nodes_from_ten_down():
    scores = np.array([1.0, 3.0, 2.0, 100.0])
    feasible = np.array([True, True, True, False])
    assert normalized_scores(scores, feasible).tolist() == [8, 10, 9, 0]


def test_normalized_scores_never_tie_the_node_place_would_pick():
    # a tie for the best raw score: `place` takes the lowest index, so must kube-scheduler
    scores = np.array([0.5, 0.9, 0.9, 0.9000001, 0.2])
    feasible = np.array([True, True, True, False, True])
    out = normalized_scores(scores, feasible)
    assert out.tolist() == [8, 10, 9, 0, 7]
    assert (out == out.max()).sum() == 1


def test_normalized_scores_keep_close_scores_apart_and_floor_the_tail_at_zero():
    # a linear 0..10 rescale would round 1.0 and 0.99 together (both 10)
    scores = np.array([1.0, 0.99] + [-float(i) for i in range(1, 15)])
    feasible = np.ones(len(scores), dtype=bool)
    out = normalized_scores(scores, feasible).tolist()
    assert out[:3] == [10, 9, 8]
    assert out == sorted(out, reverse=True)  # the policy's order, never inverted
    assert out[-5:] == [0] * 5


@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=40),
       st.data())
def test_normalized_scores_keep_the_order_and_the_argmax(vals, data):
    scores = np.array(vals)
    feasible = np.array(data.draw(st.lists(st.booleans(), min_size=len(vals),
                                           max_size=len(vals))))
    out = normalized_scores(scores, feasible)
    assert ((out >= 0) & (out <= 10)).all()
    assert (out[~feasible] == 0).all()
    if feasible.any():
        best = int(np.argmax(np.where(feasible, scores, -np.inf)))
        assert out[best] == 10 and (out == 10).sum() == 1
        f = np.flatnonzero(feasible)
        for i in f:
            for j in f:
                if scores[i] > scores[j]:
                    assert out[i] >= out[j]
                    if out[j] > 0:
                        assert out[i] > out[j]


def test_policy_names_parses_lists_and_rejects_unknown():
    assert policy_names("fgd, binpack") == ["fgd", "binpack"]
    assert policy_names("all") == list(POLICIES)
    with pytest.raises(Exception, match="unknown policy 'nope'"):
        policy_names("fgd,nope")
