"""Pod → Job translation (annotations and requests), and the static-mode store."""

from __future__ import annotations

import numpy as np
import pytest
from extender_util import extender_args, k8s_pod, post, ser, small_cluster
from fake_kube_api import pod

from gsched.scheduler.extender.pods import is_managed, pod_to_job
from gsched.scheduler.extender.store import Store
from gsched.scheduler.extender.verbs import Extender
from gsched.scheduler.extender.wire import ExtenderArgs, ExtenderBindingArgs, WireError
from gsched.scheduler.packing.profiles import LearnedProfile
from gsched.scheduler.policies.registry import make_policy

CASES = [
    # name, pod kwargs, expected Job fields
    ("whole GPUs", dict(gpus=4),
     dict(num_gpu=4, gpu_share=1.0, kind="training", preemptible=True)),
    ("milli share", dict(milli=250),
     dict(num_gpu=1, gpu_share=0.25)),
    ("milli whole", dict(milli=2000),
     dict(num_gpu=2, gpu_share=1.0)),
    ("deployment is inference", dict(gpus=1, owner=("ReplicaSet", "web-7d9f")),
     dict(kind="inference", preemptible=False)),
    ("annotations", dict(gpus=1, priority=5, annotations={
        "gsched.io/kind": "inference", "gsched.io/gpu-share": "0.5",
        "gsched.io/gpu-model": "A100, H100", "gsched.io/gpu-memory-mib": "20000",
        "gsched.io/utilization": "0.4", "gsched.io/preemptible": "true"}),
     dict(kind="inference", gpu_share=0.5, gpu_models=("A100", "H100"), gpu_mem_mib=20000,
          utilization=0.4, preemptible=True, priority=5)),
    ("priority keeps training", dict(gpus=1, priority=100),
     dict(kind="training", preemptible=False, priority=100)),
    ("annotation only", dict(annotations={"gsched.io/gpu-share": "0.3"}),
     dict(num_gpu=1, gpu_share=0.3)),
]


@pytest.mark.parametrize("name,kw,want", CASES, ids=[c[0] for c in CASES])
def test_pod_translation(name, kw, want):
    pj = pod_to_job(pod("p", "u1", **kw))
    assert pj.managed
    for k, v in want.items():
        assert getattr(pj.job, k) == v, k


def test_inline_and_named_profiles():
    inline = pod_to_job(pod("p", "u", gpus=1, annotations={"gsched.io/profile": "0.2;0.8"}))
    assert inline.job.profile.tolist() == [0.2, 0.8]
    learned = {"team/web": np.full(96, 0.3)}
    named = pod_to_job(pod("p", "u", gpus=1, namespace="team",
                           annotations={"gsched.io/profile": "web"}), learned.get)
    assert named.job.profile_name == "web" and named.job.profile[0] == 0.3
    # no annotation: the learned profile of the pod's workload (its Deployment)
    owned = pod_to_job(pod("web-5d8f7b9c6d-x2kq9", "u", gpus=1, namespace="team",
                           owner=("ReplicaSet", "web-5d8f7b9c6d")), learned.get)
    assert owned.workload == "team/web"
    assert owned.job.profile_name == "team/web"


def test_unmanaged_pods_are_cpu_footprints():
    p = pod("web", "u", cpu="500m")
    assert not is_managed(p)
    pj = pod_to_job(p)
    assert (pj.managed, pj.job.num_gpu, pj.job.cpu_milli) == (False, 0, 500)


@pytest.mark.parametrize("kw,field", [
    (dict(gpus=1, milli=500), "Pod.spec.containers.resources"),
    (dict(milli=1500), "Pod.spec.containers.resources.gsched.io/gpu-milli"),
    (dict(gpus=2, annotations={"gsched.io/gpu-share": "0.5"}),
     "Pod.metadata.annotations.gsched.io/gpu-share"),
    (dict(gpus=1, annotations={"gsched.io/gpu-share": "0"}),
     "Pod.metadata.annotations.gsched.io/gpu-share"),
    (dict(gpus=1, annotations={"gsched.io/profile": "0.5;1.5"}),
     "Pod.metadata.annotations.gsched.io/profile"),
    (dict(gpus=1, annotations={"gsched.io/preemptible": "maybe"}),
     "Pod.metadata.annotations.gsched.io/preemptible"),
])
def test_bad_pods_name_the_field(kw, field):
    with pytest.raises(WireError) as e:
        pod_to_job(pod("p", "u", **kw))
    assert e.value.field == field


def test_learned_profiles_reach_filter_and_the_store(tmp_path):
    store = Store(tmp_path / "g.db")
    ext = Extender(small_cluster(), make_policy("tidal"), store=store)
    prof = LearnedProfile(values=[0.1] * 48 + [0.9] * 48, samples=500, days=3.0,
                          last_sample=0.0, coverage=1.0, confidence=1.0)
    ext.set_profiles({"default/svc": prof})
    assert list(Store(tmp_path / "g.db").profiles()) == ["default/svc"]
    p = k8s_pod(name="svc-1", uid="u-svc", milli=500)
    p.metadata.labels = {"gsched.io/workload": "svc"}
    ext.filter(ExtenderArgs.model_validate(extender_args(p, ["a100-0"], True)))
    pj = ext._pending["u-svc"]
    assert pj.job.profile_name == "default/svc" and pj.job.profile.max() == 0.9


def test_static_mode_assignments_survive_a_restart(tmp_path):
    db = tmp_path / "gsched.db"
    ext = Extender(small_cluster(), make_policy("bestfit"), store=Store(db))
    for i, (milli, node) in enumerate([(500, "a100-0"), (2000, "a100-1"), (250, "a100-0")]):
        p = k8s_pod(name=f"p{i}", uid=f"u{i}", milli=milli)
        ext.filter(ExtenderArgs.model_validate(extender_args(p, [node], True)))
        assert ext.bind(ExtenderBindingArgs(PodName=f"p{i}", PodNamespace="default",
                                            PodUID=f"u{i}", Node=node)) == {"Error": ""}
    before = ext.state.free.copy()
    placements = {u: r.placement for u, r in ext.state.running.items()}

    again = Extender(small_cluster(), make_policy("bestfit"), store=Store(db))
    assert again.restore_from_store() == 3
    assert np.array_equal(again.state.free, before)
    assert {u: r.placement for u, r in again.state.running.items()} == placements
    assert again.state.running["u0"].job.gpu_share == 0.5


def test_a_served_pod_bound_twice_through_http_is_idempotent():
    from extender_util import make_server

    srv, ext, _ = make_server()
    try:
        p = k8s_pod(gpus=1)
        post(srv.port, "/filter", extender_args(p, ["a100-0"], True))
        bind = {"PodName": "p", "PodNamespace": "default", "PodUID": "uid-p",
                "Node": "a100-0"}
        assert post(srv.port, "/bind", bind) == (200, {"Error": ""})
        assert post(srv.port, "/bind", bind) == (200, {"Error": ""})
        assert len(ext.state.running) == 1
        assert ser(p)["metadata"]["uid"] in ext.state.running
    finally:
        srv.stop()


def test_slo_risk_gauge_counts_inference_gpus_over_capacity_minus_headroom():
    from gsched.models import Job
    from gsched.scheduler.policies.state import Placement

    ext = Extender(small_cluster(), make_policy("tidal"))
    peak = np.array([0.5] * 48 + [0.95] * 48)
    ext.state.allocate(Job(id="a", kind="inference", submit_time=0, gpu_share=1.0,
                           profile=peak), Placement(0, (0,), 1.0))
    ext.state.allocate(Job(id="b", kind="training", submit_time=0, gpu_share=1.0),
                       Placement(0, (1,), 1.0))
    ext.refresh_gauges()
    assert ext.metrics.gpus_at_slo_risk._value.get() == 1  # training may fill its GPU
    assert ext.metrics.cluster_allocation._value.get() == 2 / 22
