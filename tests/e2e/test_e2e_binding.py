"""gsched as a real kube-scheduler 1.20's extender: it binds, sets gsched.io/gpus, never
double-books a GPU, runs with the manifests' own RBAC, and rebuilds after a restart."""

from __future__ import annotations

import signal
import time

import pytest
from e2e_cluster import (
    NS,
    api_client,
    assert_no_gpu_double_booked,
    gpus_of,
    manifest_docs,
    metric,
    pod,
)
from kubernetes import client
from kubernetes.client.rest import ApiException

pytestmark = pytest.mark.e2e


def test_gsched_binds_training_inference_and_multi_gpu_pods(env):
    env.nodes([("bind-0", 8), ("bind-1", 8), ("bind-2", 4)])
    r = env.replica("solo").start()
    bodies = [pod(f"train-{i}", gpus=1) for i in range(6)]
    bodies += [pod(f"infer-{i}", milli=m, kind="inference")
               for i, m in enumerate([250, 500, 250, 750, 500, 250])]
    bodies += [pod(f"multi-{i}", gpus=4) for i in range(2)]
    bodies += [pod("multi-milli", milli=2000)]  # 2 whole GPUs asked as gpu-milli
    for b in bodies:
        env.create(b)
    names = [b["metadata"]["name"] for b in bodies]
    pods = env.wait_bound(names)
    assert_no_gpu_double_booked(pods, env.gpu_counts)
    for p in pods:
        assert p["spec"]["schedulerName"] == "gsched"
        assert gpus_of(p), p["metadata"]["name"]  # gsched's bind verb wrote its GPUs
    multi = {p["metadata"]["name"]: gpus_of(p) for p in pods
             if p["metadata"]["name"].startswith("multi")}
    assert sorted(len(g) for g in multi.values()) == [2, 4, 4]
    # every bind went through gsched's bind verb (kube-scheduler binds nothing itself)
    assert metric(r, "gsched_binds_total", outcome="bound") == len(bodies)


def test_pods_without_room_wait_and_bind_when_room_frees(env):
    env.nodes([("room-0", 2)])
    env.replica("solo").start()
    env.create(pod("big-a", gpus=2))
    env.wait_bound(["big-a"])
    env.create(pod("big-b", gpus=1))
    env.create(pod("share", milli=500, kind="inference"))
    # no GPU free: both wait (kube-scheduler keeps them pending)
    time.sleep(3)
    pending = {p["metadata"]["name"] for p in env.pods() if not p["spec"].get("nodeName")}
    assert pending == {"big-b", "share"}
    env.cp.delete_pod(env.ns, "big-a")
    pods = env.wait_bound(["big-b", "share"])
    assert_no_gpu_double_booked(pods, env.gpu_counts)


def test_manifests_apply_to_a_1_20_api_server(control_plane):
    applied = control_plane.applied
    created = set(applied["created"])
    for name in ["namespace.yaml", "scheduler-rbac.yaml", "kube-scheduler.yaml",
                 "scheduler.yaml", "agent-daemonset.yaml"]:
        for d in manifest_docs(name):
            key = f"{d['kind']}/{d['metadata'].get('namespace', '')}/{d['metadata']['name']}"
            if d["apiVersion"] == "policy/v1":  # 1.20 serves policy/v1beta1 only
                assert key in applied["dry-run"], key
            else:
                assert key in created, key
    # the PrometheusRule needs the prometheus-operator CRD, which this cluster lacks
    assert [s.split("/")[0] for s in applied["skipped"]] == ["PrometheusRule"]


def test_gsched_runs_with_the_manifests_service_account_and_nothing_more(env):
    """The replica's token is the gsched-scheduler ServiceAccount's: it can do what the
    extender needs (proved by every other test) and is refused the rest."""
    env.nodes([("rbac-0", 1)])
    r = env.replica("solo").start()
    token = r.kubeconfig.read_text().split("token: ")[1].split()[0]
    sa = api_client(env.cp.server, env.cp.ca, token)
    review = client.AuthenticationV1Api(env.cp.admin).create_token_review(
        client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token)))
    assert review.status.user.username == f"system:serviceaccount:{NS}:gsched-scheduler"
    core = client.CoreV1Api(sa)
    core.list_node()  # granted
    for call in (lambda: core.delete_node("rbac-0"),
                 lambda: core.list_namespaced_secret(NS),
                 lambda: core.create_namespaced_pod(env.ns, pod("sneaky"))):
        try:
            call()
            raise AssertionError("the gsched-scheduler ServiceAccount was allowed too much")
        except ApiException as e:
            assert e.status == 403
    env.create(pod("one", gpus=1))
    (p,) = env.wait_bound(["one"])
    assert gpus_of(p) == (0,)
    lease = client.CoordinationV1Api(env.cp.admin).read_namespaced_lease("gsched", NS)
    assert lease.spec.holder_identity == "solo"


def test_a_restarted_gsched_rebuilds_from_the_api_server_and_the_store(env):
    env.nodes([("restart-0", 2)])
    first = env.replica("first", policy="binpack").start()
    env.create(pod("a", gpus=1))
    (a,) = env.wait_bound(["a"])
    env.create(pod("b", gpus=1))
    (b,) = env.wait_bound(["b"])
    assert {gpus_of(a), gpus_of(b)} == {(0,), (1,)}
    env.cp.delete_pod(env.ns, "a")
    first.stop(signal.SIGTERM)
    # b's annotation is lost while no replica runs: only the store still knows its GPU
    env.cp.core.patch_namespaced_pod("b", env.ns,
                                     {"metadata": {"annotations": {"gsched.io/gpus": None}}})
    second = env.replica("second", policy="binpack", db=first.db).start()
    env.create(pod("c", gpus=1))
    (c,) = env.wait_bound(["c"])
    # the rebuilt state has b on its recorded GPU, so c gets the other one
    assert gpus_of(c) == tuple({0, 1} - set(gpus_of(b)))
    env.create(pod("d", gpus=1))
    time.sleep(3)
    d = next(p for p in env.pods() if p["metadata"]["name"] == "d")
    assert not d["spec"].get("nodeName")  # the node is full in the rebuilt state
    assert metric(second, "gsched_binds_total", outcome="bound") == 1
