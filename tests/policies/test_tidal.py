"""The tidal policy and its online score: colocation by profile, training in the valleys."""

from __future__ import annotations

import numpy as np
import pytest

from gsched.models import Cluster, Job, Node, Trace
from gsched.scheduler.policies.online import LoadIndex
from gsched.scheduler.policies.policy import PolicyConfig, place
from gsched.scheduler.policies.registry import POLICIES, make_policy
from gsched.scheduler.policies.state import ClusterState, NoFit, Placement, Reason
from gsched.simulator.engine import SimConfig, Simulation

SLOT_S = 900.0


def bump(hour: float, peak: float = 1.0, base: float = 0.15) -> np.ndarray:
    """A 96-slot utilisation profile peaking at `hour` over a `base` valley."""
    h = np.arange(96) / 4
    d = np.minimum(np.abs(h - hour), 24 - np.abs(h - hour))
    return np.maximum(base, peak * np.exp(-(d / 4) ** 2))


def service(jid: str, hour: float, share: float = 0.6, **kw) -> Job:
    return Job(id=jid, kind="inference", submit_time=kw.pop("submit_time", 0.0),
               gpu_share=share, profile=bump(hour), **kw)


def training(jid: str, share: float = 0.5, util: float = 0.8, **kw) -> Job:
    return Job(id=jid, kind="training", submit_time=kw.pop("submit_time", 0.0),
               duration=kw.pop("duration", 3600.0), gpu_share=share, utilization=util,
               preemptible=kw.pop("preemptible", True), **kw)


def one_gpu(n: int = 1) -> Cluster:
    return Cluster(nodes=[Node(name=f"n{i}", gpu_count=1, gpu_model="A100") for i in range(n)])


def test_anti_phase_services_share_a_gpu_only_under_tidal():
    day, night = service("day", 14), service("night", 2)
    for name in POLICIES:
        st = ClusterState(one_gpu())
        pol = make_policy(name)
        first = place(pol, st, day)
        assert isinstance(first, Placement)
        st.allocate(day, first)
        second = place(pol, st, night)
        if name == "tidal":
            assert isinstance(second, Placement) and second.gpus == (0,)
            st.allocate(night, second)
            assert st.free[0, 0] < 0            # requests overcommitted...
            assert st.load[0, 0].max() <= 0.9   # ...but the daily load fits the headroom
        else:
            assert isinstance(second, NoFit), name


def test_in_phase_services_are_refused_with_the_profile_reason():
    st = ClusterState(one_gpu())
    pol = make_policy("tidal")
    st.allocate(service("a", 14), place(pol, st, service("a", 14)))
    out = place(pol, st, service("b", 15))
    assert isinstance(out, NoFit) and out.reasons == {Reason.PROFILE.message: 1}


def test_headroom_is_kept_for_inference_but_training_may_fill_a_gpu():
    pol = make_policy("tidal", PolicyConfig(headroom=0.2))
    st = ClusterState(one_gpu())
    j = training("t1", share=0.5, util=1.0, preemptible=False)
    st.allocate(j, place(pol, st, j))
    t2 = training("t2", share=0.5, util=1.0)
    where = place(pol, st, t2)
    assert isinstance(where, Placement)  # training-only GPU: filled to 1.0
    assert isinstance(place(pol, st, service("s", 3, share=0.3)), Placement)  # 0.5+0.3 <= 0.8
    st.allocate(t2, where)
    assert isinstance(place(pol, st, service("s", 3, share=0.3)), NoFit)


def test_score_prefers_the_gpu_whose_valley_matches_the_peak():
    cl = Cluster(nodes=[Node(name="a", gpu_count=1), Node(name="b", gpu_count=1)])
    st = ClusterState(cl)
    pol = make_policy("tidal")
    st.allocate(service("day", 14, share=0.4), Placement(0, (0,), 0.4))
    st.allocate(service("night", 2, share=0.4), Placement(1, (0,), 0.4))
    out = place(pol, st, service("new", 13, share=0.4))
    assert out.node == 1  # its 13:00 peak lands in node b's valley


def test_training_runs_in_the_valley_and_moves_out_before_the_peak():
    st = ClusterState(one_gpu())
    pol = make_policy("tidal")
    svc = service("svc", 14, share=1.0)
    st.allocate(svc, place(pol, st, svc))
    st.now = 2 * 3600.0  # 02:00, deep in the valley
    train = training("train", share=0.5, util=1.0, duration=20 * 3600.0)
    where = place(pol, st, train)
    assert isinstance(where, Placement)
    st.allocate(train, where)
    evicted_at = None
    for slot in range(9, 96):
        if pol.on_slot(st, slot, slot * SLOT_S):
            evicted_at = slot
            break
    assert evicted_at is not None
    # moved out just before the first slot whose forecast exceeds 0.9
    assert st.load[0, 0, evicted_at] > 0.9 and (st.load[0, 0, 9:evicted_at] <= 0.9).all()
    st.now = 13 * 3600.0
    assert isinstance(place(pol, st, train), NoFit)  # and cannot come back at the peak


def test_online_fit_matches_a_direct_slot_by_slot_check():
    rng = np.random.default_rng(5)
    cl = Cluster(nodes=[Node(name=f"n{i}", gpu_count=4) for i in range(30)])
    st = ClusterState(cl)
    for k in range(90):
        j = service(f"s{k}", float(rng.uniform(0, 24)), share=float(rng.uniform(0.1, 0.5)))
        st.allocate(j, Placement(int(rng.integers(30)), (int(rng.integers(4)),), j.gpu_share))
    idx = LoadIndex(st, headroom=0.1)
    for k in range(20):
        j = service(f"q{k}", float(rng.uniform(0, 24)), share=float(rng.uniform(0.1, 0.6)))
        ok = idx.fit(j).ok
        direct = (st.load + j.load_profile() <= 0.9 + 1e-9).all(axis=2) & st.gpu_valid
        assert (ok == direct).all()


def test_online_cache_follows_node_versions():
    st = ClusterState(one_gpu(2))
    idx = LoadIndex(st)
    a = service("a", 14)
    assert idx.fit(a).ok[:, 0].tolist() == [True, True]
    st.allocate(a, Placement(0, (0,), 0.6))
    assert idx.fit(service("b", 14)).ok[:, 0].tolist() == [False, True]
    st.release("a")
    assert idx.fit(service("b", 14)).ok[:, 0].tolist() == [True, True]


def anti_phase_trace() -> Trace:
    """Two services twelve hours apart plus a stream of hour-long training jobs, two days."""
    jobs = [service("day", 14), service("night", 2)]
    jobs += [training(f"t{k}", share=1.0, util=0.9, submit_time=600.0 * k, duration=3600.0)
             for k in range(60)]
    return Trace(jobs=sorted(jobs, key=lambda j: j.submit_time))


@pytest.mark.parametrize("baseline", ["peak", "binpack", "fgd", "k8s-spread"])
def test_tidal_serves_both_services_and_trains_where_request_policies_cannot(baseline):
    cfg = SimConfig(until_s=2 * 86_400.0)
    tr, cl = anti_phase_trace(), one_gpu(2)
    out = {}
    for name in ("tidal", baseline):
        sim = Simulation(tr, cl, make_policy(name), cfg)
        figures = sim.run().figures
        out[name] = ({"day", "night"} <= set(sim.state.running),
                     figures["completed_training_jobs"], figures["slo_risk_slot_minutes"])
    served, trained, risk = out["tidal"]
    b_served, b_trained, _ = out[baseline]
    assert served and risk == 0 and trained >= 40
    # a request policy either leaves a service waiting or gives training no GPU
    assert not b_served or b_trained < trained


# -- fragmentation across time slots (tidal_frag.py) ----------------------------------

def flat_inference(jid: str, share: float, cpu: int = 0) -> Job:
    return Job(id=jid, kind="inference", submit_time=0.0, gpu_share=share, cpu_milli=cpu)


def test_headroom_guards_forecast_inference_not_flat_requests():
    # two flat half-GPU requests (no forecast to be wrong about) fill a GPU to 1.0 ...
    st = ClusterState(one_gpu())
    pol = make_policy("tidal")
    for jid in ("a", "b"):
        d = place(pol, st, flat_inference(jid, 0.5))
        assert isinstance(d, Placement)
        st.allocate(flat_inference(jid, 0.5), d)
    assert st.load[0, 0].max() == pytest.approx(1.0)
    # ... while a forecast service keeps its headroom: 0.6 + 0.4 at a shared peak is over 0.9
    st = ClusterState(one_gpu())
    st.allocate(service("s", 14), Placement(0, (0,), 0.6))
    assert isinstance(place(pol, st, service("t", 14, share=0.4)), NoFit)


def test_time_fragmentation_counts_the_capacity_left_at_each_gpus_peak():
    from gsched.scheduler.policies.tidal_frag import TimeFragmentation

    st = ClusterState(Cluster(nodes=[Node(name="n0", gpu_count=2, gpu_model="A100")]))
    st.allocate(service("s", 14, share=0.5), Placement(0, (0,), 0.5))
    tf = TimeFragmentation([flat_inference("w", 0.5)], headroom=0.1)
    # GPU 0 peaks at 0.5 under headroom 0.1: 400 milli left at the peak; GPU 1 is empty
    assert tf.peak_left(st, np.array([0])).tolist() == [[400, 1000]]


def test_cpu_only_pods_go_where_their_cpu_strands_no_gpu():
    # n0: 8 GPUs and 16 CPUs; n1: 2 GPUs and 104 CPUs. GPU pods need 8 CPUs per GPU.
    cl = Cluster(nodes=[Node(name="n0", gpu_count=8, gpu_model="A100", cpu_milli=16000),
                        Node(name="n1", gpu_count=2, gpu_model="A100", cpu_milli=104000)])
    workload = [flat_inference("w", 1.0, cpu=8000)]
    cpu_job = Job(id="c", kind="inference", submit_time=0.0, num_gpu=0, cpu_milli=4000)
    st = ClusterState(cl)
    pol = make_policy("tidal", PolicyConfig(workload=workload))
    # FGD's all-or-nothing fit ties them (n0 keeps 12 CPUs, enough for one GPU pod): node
    # order would pick n0 and leave it 12 CPUs for 8 GPUs; the stranding term picks n1
    assert make_policy("fgd", PolicyConfig(workload=workload)).score(
        st, cpu_job, np.ones(2, dtype=bool)).tolist() == [50, 50]
    assert place(pol, st, cpu_job).node == 1


def test_jobs_whose_load_is_not_their_request_rank_by_load_fit_first():
    from gsched.scheduler.policies.tidal_frag import load_first

    assert load_first(service("s", 14)) and load_first(training("t", util=0.4))
    assert not load_first(flat_inference("f", 0.5)) and not load_first(training("u", util=1.0))
    # a light training job joins the occupied GPU's valley rather than opening the first
    # (empty) node: the tidal score ranks first for it
    st = ClusterState(one_gpu(2))
    st.allocate(service("night", 2, share=0.5), Placement(1, (0,), 0.5))
    d = place(make_policy("tidal"), st, training("t", share=1.0, util=0.3))
    assert isinstance(d, Placement) and d.node == 1


def test_inference_reserve_keeps_inference_off_inference_but_not_training_off_valleys():
    day, night = service("day", 14), service("night", 2)
    # Alone, the pair peaks at 0.69 of the GPU: it fits the headroom (share by profile),
    # survives a +25 % surge (0.86) but not a +50 % one (1.04).
    for reserve, shares in ((0.0, True), (0.25, True), (0.5, False)):
        st = ClusterState(one_gpu())
        pol = make_policy("tidal", PolicyConfig(inference_reserve=reserve))
        st.allocate(day, place(pol, st, day))
        assert isinstance(place(pol, st, night), Placement) is shares, reserve
    # Training is evictable: it still rides the day service's valley at the reserve.
    st = ClusterState(one_gpu())
    pol = make_policy("tidal", PolicyConfig(inference_reserve=0.5))
    st.allocate(day, place(pol, st, day))
    st.now = 2 * 3600.0  # 02:00, the day service's valley
    got = place(pol, st, training("t", util=0.8))
    assert isinstance(got, Placement) and got.gpus == (0,)


def test_waste_table_is_the_gap_a_gpu_strands_once_the_workloads_shares_fill_it():
    from gsched.scheduler.policies.tidal_frag import waste_table

    # shares of 470 and 810 milli-GPU, equally popular
    w = waste_table(np.array([470, 810, 0]), np.array([0.4, 0.4, 0.2]))
    assert w[53] == pytest.approx(60.0)    # a 530 gap takes a 470 and keeps 60
    assert w[21] == pytest.approx(210.0)   # nothing fits a 210 gap
    assert w[100] == pytest.approx(125.0)  # an empty GPU: half 470 (60 left), half 810 (190)
    # a GPU model no share may use strands its whole gap
    assert waste_table(np.array([470]), np.array([0.0]))[53] == pytest.approx(530.0)


def test_a_share_fills_the_most_common_gap_among_equal_moves():
    # four one-GPU nodes: n0 has 600 milli-GPU left, n1-n3 700 each. For a 100 share every
    # move is equal to FGD (and to the expected waste: 100s fill any gap), so node order
    # would pick n0; the sum-of-squares gap term fills one of the three 700 gaps instead
    cl = Cluster(nodes=[Node(name=f"n{i}", gpu_count=1, gpu_model="A100") for i in range(4)])
    st = ClusterState(cl)
    for i, used in enumerate((0.4, 0.3, 0.3, 0.3)):
        st.allocate(flat_inference(f"u{i}", used), Placement(i, (0,), used))
    pol = make_policy("tidal", PolicyConfig(workload=[flat_inference("w", 0.1)]))
    d = place(pol, st, flat_inference("x", 0.1))
    assert isinstance(d, Placement) and d.node == 1
