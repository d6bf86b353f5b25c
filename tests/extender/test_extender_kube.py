"""The watch loop, binding and restart, against a local API server speaking list/watch."""

from __future__ import annotations

import pytest
from extender_util import extender_args, k8s_pod, ser
from fake_kube_api import FakeKubeAPI, node, pod
from kubernetes import client

from gsched.models import Cluster
from gsched.scheduler.extender.kube import KubeBinder, KubeSync, gpu_model, node_from_k8s
from gsched.scheduler.extender.store import Store
from gsched.scheduler.extender.verbs import Extender
from gsched.scheduler.extender.wire import ExtenderArgs, ExtenderBindingArgs
from gsched.scheduler.policies.registry import make_policy


@pytest.fixture
def api():
    a = FakeKubeAPI().start()
    yield a
    a.stop()


def core_for(api: FakeKubeAPI) -> client.CoreV1Api:
    cfg = client.Configuration()
    cfg.host = api.url
    return client.CoreV1Api(client.ApiClient(cfg))


def start(api: FakeKubeAPI, store: Store | None = None, policy: str = "binpack"
          ) -> tuple[Extender, KubeSync]:
    core = core_for(api)
    ext = Extender(Cluster(nodes=[]), make_policy(policy), store=store,
                   binder=KubeBinder(core))
    sync = KubeSync(core, ext, watch_timeout_s=5, backoff_s=(0.01, 0.05)).start()
    return ext, sync


def free(ext: Extender, name: str) -> list[float]:
    i = ext.state.node_index[name]
    return ext.state.free[i, : ext.state.gpu_count[i]].tolist()


@pytest.mark.parametrize("product,model", [
    ("NVIDIA-A100-SXM4-80GB", "A100"), ("Tesla-T4", "T4"), ("NVIDIA-H100-80GB-HBM3", "H100"),
    ("NVIDIA-A10G", "A10"), ("NVIDIA-L40S", "NVIDIA-L40S"), ("NVIDIA-L4", "L4"),
    ("Tesla-V100-SXM2-16GB", "V100")])
def test_gpu_product_labels_map_to_gsched_models(product, model):
    assert gpu_model(product) == model


def test_node_inventory_comes_from_gpu_capacity_and_labels():
    n = node_from_k8s(node("g1", gpus=4, product="Tesla-T4", cpu="32", memory="128Gi",
                           labels={"nvidia.com/gpu.memory": "15360"}))
    assert (n.name, n.gpu_count, n.gpu_model, n.gpu_memory_mib, n.cpu_milli, n.memory_mib) \
        == ("g1", 4, "T4", 15360, 32000, 131072)
    assert node_from_k8s(node("cpu", gpus=0)) is None


def test_initial_list_books_bound_pods_on_their_annotated_gpus(api):
    api.put_node(node("n1"))
    api.put_node(node("n2", gpus=4, product="Tesla-T4"))
    api.put_pod(pod("a", "ua", gpus=2, node_name="n1", phase="Running",
                    annotations={"gsched.io/gpus": "3,5"}))
    api.put_pod(pod("done", "ud", gpus=1, node_name="n2", phase="Succeeded"))
    api.put_pod(pod("waiting", "uw", gpus=1))
    ext, sync = start(api)
    try:
        assert ext.state.node_names == ["n1", "n2"]
        assert ext.state.model_names == ["A100", "T4"]
        assert free(ext, "n1") == [1, 1, 1, 0, 1, 0, 1, 1]
        assert free(ext, "n2") == [1, 1, 1, 1]
        assert ext.ready.is_set()
        assert ("default", "waiting") in sync.pending
    finally:
        sync.stop()


def test_watch_follows_events_through_410_gone_and_a_dropped_connection(api):
    api.put_node(node("n1"))
    events = []
    ext, sync = start(api)
    sync.on_event = lambda kind, what: events.append((kind, what))
    try:
        # a chunked watch stream delivers a new bound pod
        api.put_pod(pod("b", "ub", gpus=1, node_name="n1", phase="Running"))
        assert api.wait_for(lambda: "ub" in ext.state.running)
        assert free(ext, "n1") == [0, 1, 1, 1, 1, 1, 1, 1]
        # 410 Gone (as an ERROR event) -> the pods are listed again
        api.expire("pods")
        api.drop_watches()
        api.put_pod(pod("c", "uc", gpus=1, node_name="n1", phase="Running"))
        assert api.wait_for(lambda: "uc" in ext.state.running)
        assert sync.relists["pods"] == 2
        # 410 as an HTTP status -> listed again too
        api.gone_as_status = True
        api.expire("pods")
        api.drop_watches()
        assert api.wait_for(lambda: sync.relists["pods"] == 3)
        api.gone_as_status = False
        # a dropped connection without 410: resume from the last version, no relist
        opened = api.watches_opened["pods"]
        api.drop_watches()
        assert api.wait_for(lambda: api.watches_opened["pods"] > opened)
        api.put_pod(pod("d", "udd", gpus=1, node_name="n1", phase="Running"))
        assert api.wait_for(lambda: "udd" in ext.state.running)
        assert sync.relists["pods"] == 3
        assert ("pods", "backoff") in events
        # finishing and deleting release the GPUs
        p = api.pods[("default", "b")]
        p["status"]["phase"] = "Succeeded"
        api.put_pod(p)
        api.delete_pod("default", "c")
        assert api.wait_for(lambda: not {"ub", "uc"} & set(ext.state.running))
        assert sorted(free(ext, "n1")) == [0, 1, 1, 1, 1, 1, 1, 1]
        # a new GPU node rebuilds the inventory and keeps the bookings
        api.put_node(node("n3", gpus=2))
        assert api.wait_for(lambda: "n3" in ext.state.node_index)
        assert "udd" in ext.state.running
        # a heartbeat that changes nothing gsched reads does not rebuild
        state = ext.state
        n1 = api.nodes["n1"]
        n1["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
        api.put_node(n1)
        assert api.wait_for(lambda: sum(1 for e in events if e == ("nodes", "MODIFIED")) == 1)
        assert ext.state is state
    finally:
        sync.stop()


def test_bind_annotates_and_binds_through_the_api_and_survives_a_restart(api, tmp_path):
    api.put_node(node("n1"))
    api.put_node(node("n2"))
    api.put_pod(pod("old", "uo", gpus=1, node_name="n1", phase="Running",
                    annotations={"gsched.io/gpus": "0"}))
    db = tmp_path / "gsched.db"
    ext, sync = start(api, Store(db))
    try:
        p = k8s_pod(name="train", uid="ut", milli=500, rv="7")
        api.put_pod(ser(p))
        assert api.wait_for(lambda: ("default", "train") in sync.pending)
        args = ExtenderArgs.model_validate(extender_args(p, ["n1", "n2"], True))
        assert ext.filter(args)["NodeNames"] == ["n1", "n2"]
        res = ext.bind(ExtenderBindingArgs(PodName="train", PodNamespace="default",
                                           PodUID="ut", Node="n1"))
        assert res == {"Error": ""}
        got = api.pods[("default", "train")]
        assert got["spec"]["nodeName"] == "n1"
        assert got["metadata"]["annotations"]["gsched.io/gpus"] == "1"
        assert api.bindings == [("default", "train", "n1")]
        assert api.wait_for(lambda: ext.placed["ut"].node == "n1" and ext.placed["ut"].gpus
                            == (1,))
        # binding a pod the API server already bound elsewhere is an Error, not a crash
        api.put_pod(pod("taken", "ux", gpus=1, node_name="n2"))
        assert api.wait_for(lambda: "ux" in ext.state.running)
        res = ext.bind(ExtenderBindingArgs(PodName="taken", PodNamespace="default",
                                           PodUID="ux", Node="n1"))
        assert "already bound to n2" in res["Error"]
        before = {n: free(ext, n) for n in ("n1", "n2")}
    finally:
        sync.stop()
    # a new replica rebuilds the same state from the API server and the store
    ext2, sync2 = start(api, Store(db))
    try:
        assert {n: free(ext2, n) for n in ("n1", "n2")} == before
        assert ext2.state.running["ut"].placement.gpus == (1,)
        assert Store(db).assignment("ut").gpus == (1,)
    finally:
        sync2.stop()


def test_a_refused_binding_undoes_the_booking(api):
    api.put_node(node("n1"))
    ext, sync = start(api)
    try:
        p = k8s_pod(name="gone", uid="ug", gpus=1)
        args = ExtenderArgs.model_validate(extender_args(p, ["n1"], True))
        ext.filter(args)  # seen by filter, but absent from the API server
        res = ext.bind(ExtenderBindingArgs(PodName="gone", PodNamespace="default",
                                           PodUID="ug", Node="n1"))
        assert res["Error"].startswith("binding failed: annotating the pod: 404 Not Found")
        assert "ug" not in ext.state.running
        assert free(ext, "n1") == [1.0] * 8
    finally:
        sync.stop()
