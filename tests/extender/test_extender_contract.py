"""Contract tests: the extender API as kube-scheduler speaks it, over real HTTP."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import urllib.request
from pathlib import Path

import pytest
from extender_util import (
    extender_args,
    k8s_pod,
    make_server,
    post,
    raw_http,
    ser,
)

from gsched.models import Job
from gsched.scheduler.extender.server import ExtenderServer, ServerConfig
from gsched.scheduler.policies.state import Placement

ALL = ["a100-0", "a100-1", "t4", "small", "cpu-only"]
needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None,
                                   reason="the openssl command makes the test certificates")


@pytest.fixture
def served():
    srv, ext, metrics = make_server("binpack")
    # six GPUs of a100-1 are taken
    busy = Job(id="busy", kind="inference", submit_time=0, num_gpu=6)
    ext.state.allocate(busy, Placement(1, (0, 1, 2, 3, 4, 5), 1.0))
    yield srv, ext, metrics
    srv.stop()


@pytest.mark.parametrize("cache", [True, False], ids=["nodeCacheCapable", "Nodes"])
def test_filter_answers_each_node_with_the_right_list_and_reason(served, cache):
    srv, ext, _ = served
    pod = k8s_pod(gpus=4, annotations={"gsched.io/gpu-model": "A100"})
    code, res = post(srv.port, "/filter", extender_args(pod, ALL, cache))
    assert code == 200
    assert set(res) == {"Nodes", "NodeNames", "FailedNodes", "FailedAndUnresolvableNodes",
                        "Error"}
    assert res["Error"] == ""
    assert res["FailedNodes"] == {"a100-1": "not enough free whole GPUs",
                                  "cpu-only": "node is not in gsched's GPU inventory"}
    assert res["FailedAndUnresolvableNodes"] == {
        "t4": "GPU model not allowed by the job",
        "small": "node has fewer GPUs than the job needs"}
    if cache:
        assert res["NodeNames"] == ["a100-0"]
        assert res["Nodes"] is None
    else:
        # kube-scheduler reads only Nodes in this mode: the passing Node objects, intact
        assert res["NodeNames"] is None
        assert [n["metadata"]["name"] for n in res["Nodes"]["items"]] == ["a100-0"]
        sent = extender_args(pod, ALL, cache)["Nodes"]["items"][0]
        assert res["Nodes"]["items"][0] == sent


@pytest.mark.parametrize("cache", [True, False], ids=["nodeCacheCapable", "Nodes"])
def test_prioritize_ranks_binpack_scores_from_10_down(served, cache):
    srv, _, _ = served
    pod = k8s_pod(gpus=1)
    names = ["a100-0", "a100-1", "t4", "small"]
    code, res = post(srv.port, "/prioritize", extender_args(pod, names, cache))
    assert code == 200
    # MostAllocated after placing one GPU: 1/8, 7/8, 1/4, 1/2 -> ranked 10, 9, 8, 7
    assert res == [{"Host": "a100-0", "Score": 7}, {"Host": "a100-1", "Score": 10},
                   {"Host": "t4", "Score": 8}, {"Host": "small", "Score": 9}]


def test_unmanaged_pod_gets_every_node_and_neutral_scores(served):
    srv, ext, _ = served
    pod = k8s_pod()  # CPU and memory only, no gsched annotation
    code, res = post(srv.port, "/filter", extender_args(pod, ALL, True))
    assert (code, res["NodeNames"], res["FailedNodes"], res["Error"]) == (200, ALL, {}, "")
    code, res = post(srv.port, "/prioritize", extender_args(pod, ALL, True))
    assert res == [{"Host": n, "Score": 0} for n in ALL]
    code, res = post(srv.port, "/filter", extender_args(pod, ALL[:2], False))
    assert [n["metadata"]["name"] for n in res["Nodes"]["items"]] == ALL[:2]


def test_keys_in_any_case_are_accepted(served):
    srv, _, _ = served
    pod = ser(k8s_pod(gpus=4))
    code, res = post(srv.port, "/filter", {"pod": pod, "NODENAMES": ["a100-0", "a100-1"],
                                           "nodes": None})
    assert code == 200
    assert res["NodeNames"] == ["a100-0"]
    code, res = post(srv.port, "/bind", {"podname": "p", "podNamespace": "default",
                                         "poduid": "uid-p", "NODE": "a100-0"})
    assert (code, res) == (200, {"Error": ""})


def test_bind_books_the_gpus_and_a_second_bind_elsewhere_is_refused(served):
    srv, ext, metrics = served
    pod = k8s_pod(name="train", uid="uid-t", gpus=2)
    post(srv.port, "/filter", extender_args(pod, ALL, True))
    code, res = post(srv.port, "/bind", {"PodName": "train", "PodNamespace": "default",
                                         "PodUID": "uid-t", "Node": "a100-1"})
    assert (code, res) == (200, {"Error": ""})
    assert ext.state.running["uid-t"].placement.gpus == (6, 7)
    assert ext.placed["uid-t"].gpus == (6, 7)
    code, res = post(srv.port, "/bind", {"PodName": "train", "PodNamespace": "default",
                                         "PodUID": "uid-t", "Node": "a100-0"})
    assert res == {"Error": "pod is already bound to a100-1"}
    # a1001 is now full: a one-GPU pod no longer fits there
    pod2 = k8s_pod(name="p2", uid="uid-2", gpus=1)
    _, res = post(srv.port, "/filter", extender_args(pod2, ["a100-1"], True))
    assert res["FailedNodes"] == {"a100-1": "not enough free whole GPUs"}
    assert metrics.binds.labels(outcome="bound")._value.get() == 1


def test_bind_of_a_pod_never_filtered_is_an_error_not_a_crash(served):
    srv, _, _ = served
    code, res = post(srv.port, "/bind", {"PodName": "ghost", "PodNamespace": "x",
                                         "PodUID": "u", "Node": "a100-0"})
    assert code == 200
    assert res["Error"].startswith("pod x/ghost is unknown to gsched")


def test_bind_on_a_non_leader_replica_is_refused():
    srv, ext, _ = make_server(is_leader=lambda: False, leader_name=lambda: "replica-b")
    try:
        pod = k8s_pod(gpus=1)
        post(srv.port, "/filter", extender_args(pod, ALL, True))
        code, res = post(srv.port, "/bind", {"PodName": "p", "PodNamespace": "default",
                                             "PodUID": "uid-p", "Node": "a100-0"})
        assert code == 200
        assert "not the leader (the leader is replica-b)" in res["Error"]
        assert ext.state.running == {}
        # filter and prioritize still work on a follower
        code, res = post(srv.port, "/filter", extender_args(pod, ["a100-0"], True))
        assert res["NodeNames"] == ["a100-0"]
    finally:
        srv.stop()


@pytest.mark.parametrize("cache", [True, False], ids=["MetaVictims", "Victims"])
def test_preempt_offers_best_effort_training_before_inference(cache):
    srv, ext, metrics = make_server("binpack")
    try:
        s = ext.state
        infer = Job(id="inf", kind="inference", submit_time=0, num_gpu=4, priority=0)
        train = Job(id="trn", kind="training", submit_time=0, num_gpu=4, priority=0,
                    preemptible=True)
        infer2 = Job(id="inf2", kind="inference", submit_time=0, num_gpu=8, priority=0)
        s.allocate(infer, Placement(0, (0, 1, 2, 3), 1.0))
        s.allocate(train, Placement(0, (4, 5, 6, 7), 1.0))
        s.allocate(infer2, Placement(1, tuple(range(8)), 1.0))
        from gsched.scheduler.extender import pods as podlib

        for j, node in ((infer, "a100-0"), (train, "a100-0"), (infer2, "a100-1")):
            ext.placed[j.id] = podlib.PodJob(j.id, "default", j.id, node, "Running", True,
                                             j, j.id, ())
        pod = ser(k8s_pod(name="hi", uid="uid-hi", gpus=4, priority=1000,
                          annotations={"gsched.io/kind": "inference"}))
        # kube-scheduler would evict both pods on a100-0 and the one on a100-1
        if cache:
            args = {"Pod": pod, "NodeNameToVictims": None, "NodeNameToMetaVictims": {
                "a100-0": {"Pods": [{"UID": "inf"}, {"UID": "trn"}], "NumPDBViolations": 1},
                "a100-1": {"Pods": [{"UID": "inf2"}], "NumPDBViolations": 0}}}
        else:
            def victim(uid):
                return ser(k8s_pod(name=uid, uid=uid, gpus=4))
            args = {"Pod": pod, "NodeNameToMetaVictims": None, "NodeNameToVictims": {
                "a100-0": {"Pods": [victim("inf"), victim("trn")], "NumPDBViolations": 1},
                "a100-1": {"Pods": [victim("inf2")], "NumPDBViolations": 0}}}
        code, res = post(srv.port, "/preempt", args)
        assert code == 200
        # a100-0 needs only the training pod; a100-1 would cost inference: dropped
        assert res == {"NodeNameToMetaVictims": {
            "a100-0": {"Pods": [{"UID": "trn"}], "NumPDBViolations": 1}}}
        assert metrics.preemptions.labels(kind="training")._value.get() == 1
        assert s.running.keys() == {"inf", "trn", "inf2"}  # deciding evicts nothing
    finally:
        srv.stop()


def test_malformed_bodies_get_400_naming_the_field(served):
    srv, _, metrics = served
    cases = [
        (b"{not json", ""),
        (b"[]", ""),
        (b'{"Pod": 3, "NodeNames": []}', "Pod"),
        (b'{"Pod": {"metadata": {"name": "x"}}, "NodeNames": "a100-0"}', "NodeNames"),
        (b'{"Pod": {"metadata": {"name": "x"}}, "NodeNames": [1]}', "NodeNames[0]"),
        (b'{"Pod": {"metadata": {"name": "x"}}, "Nodes": {"items": [{"metadata": {}}]}}',
         "Nodes.items[0].metadata.name"),
        (b'{"Pod": {"metadata": {"name": "x", "annotations": {"gsched.io/kind": "batch"}}},'
         b' "NodeNames": []}', "Pod.metadata.annotations.gsched.io/kind"),
        (b'{"Pod": {"metadata": {"name": "x"}, "spec": {"containers": [{"name": "c",'
         b' "resources": {"requests": {"nvidia.com/gpu": "lots"}}}]}}, "NodeNames": []}',
         "Pod.spec.containers[0].resources.requests.nvidia.com/gpu"),
    ]
    for body, field in cases:
        code, res = post(srv.port, "/filter", body)
        assert code == 400, body
        assert res["field"] == field, (body, res)
        if field:
            assert f"'{field}'" in res["error"]
    code, res = post(srv.port, "/bind", {"PodName": "p"})
    assert (code, res["field"]) == (400, "Node")
    code, res = post(srv.port, "/preempt", {"Pod": None, "NodeNameToMetaVictims": {
        "a100-0": {"Pods": [{"UID": 7}]}}})
    assert (code, res["field"]) == (400, "NodeNameToMetaVictims.a100-0.Pods[0].UID")
    assert metrics.requests.labels(verb="filter", code="400")._value.get() == len(cases)


def test_size_limit_token_routes_and_health():
    srv, ext, _ = make_server(config=ServerConfig(port=0, token="s3cret", max_body_bytes=1000))
    try:
        pod = extender_args(k8s_pod(gpus=1), ["a100-0"], True)
        assert post(srv.port, "/filter", pod)[0] == 401
        assert post(srv.port, "/filter", pod, {"Authorization": "Bearer nope"})[0] == 401
        code, res = post(srv.port, "/filter", pod, {"Authorization": "Bearer s3cret"})
        assert (code, res["NodeNames"]) == (200, ["a100-0"])
        code, res = post(srv.port, "/filter", b"x" * 5000, {"Authorization": "Bearer s3cret"})
        assert code == 413 and "over the limit of 1000" in res["error"]
        head = raw_http(srv.port, b"POST /filter HTTP/1.1\r\nHost: x\r\n"
                                  b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 411")
        assert post(srv.port, "/nope", {})[0] == 404
        with urllib.request.urlopen(f"{srv.url}/healthz") as r:
            assert r.status == 200
        with urllib.request.urlopen(f"{srv.url}/readyz") as r:
            assert r.status == 200
        ext.ready.clear()
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"{srv.url}/readyz")
        assert e.value.code == 503
        with urllib.request.urlopen(f"{srv.url}/metrics") as r:
            text = r.read().decode()
        assert 'gsched_extender_requests_total{code="401",verb="filter"} 2.0' in text
        assert 'gsched_extender_requests_total{code="413",verb="oversize"} 1.0' in text
    finally:
        srv.stop()


def test_extra_routes_are_mounted_beside_the_verbs():
    from extender_util import small_cluster

    from gsched.scheduler.extender.metrics import SchedulerMetrics
    from gsched.scheduler.extender.verbs import Extender
    from gsched.scheduler.policies.registry import make_policy

    seen = []

    def reports(body, headers):
        seen.append((body, headers.get("X-Node")))
        return 202, {"accepted": len(body)}

    metrics = SchedulerMetrics()
    ext = Extender(small_cluster(), make_policy("binpack"), metrics=metrics)
    srv = ExtenderServer(ext, metrics, ServerConfig(port=0, prefix="/gsched"),
                         extra_routes={("POST", "/v1/reports"): reports}).start()
    try:
        code, res = post(srv.port, "/v1/reports", b"abc", {"X-Node": "n1"})
        assert (code, res, seen) == (202, {"accepted": 3}, [(b"abc", "n1")])
        assert post(srv.port, "/filter", {})[0] == 404  # verbs live under the prefix
        code, _ = post(srv.port, "/gsched/filter",
                       extender_args(k8s_pod(gpus=1), ["a100-0"], True))
        assert code == 200
        assert metrics.requests.labels(verb="/v1/reports", code="202")._value.get() == 1
        with pytest.raises(ValueError, match="already taken"):
            ExtenderServer(ext, metrics, ServerConfig(port=0),
                           extra_routes={("GET", "/metrics"): reports})
    finally:
        srv.stop()


@needs_openssl
def test_tls_serves_the_verbs(tmp_path: Path):
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    srv, _, _ = make_server(config=ServerConfig(port=0, tls_cert=cert, tls_key=key))
    try:
        assert srv.url.startswith("https://")
        ctx = ssl.create_default_context(cafile=str(cert))
        import json

        body = json.dumps(extender_args(k8s_pod(gpus=1), ["a100-0"], True)).encode()
        req = urllib.request.Request(f"{srv.url}/filter", data=body, method="POST")
        with urllib.request.urlopen(req, context=ctx) as r:
            assert json.loads(r.read())["NodeNames"] == ["a100-0"]
        # a plain-HTTP client gets no answer, and the server keeps serving
        raw_http(srv.port, b"GET /healthz HTTP/1.1\r\n\r\n", timeout=2)
        with urllib.request.urlopen(f"{srv.url}/healthz", context=ctx) as r:
            assert r.status == 200
    finally:
        srv.stop()


@needs_openssl
def test_tls_client_certificates_guard_the_verbs_when_the_token_cannot(tmp_path: Path):
    def openssl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    d = tmp_path
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=ca",
            "-keyout", str(d / "ca.key"), "-out", str(d / "ca.crt"))
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(d / "srv.key"), "-out", str(d / "srv.crt"))
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=kube-scheduler",
            "-keyout", str(d / "cli.key"), "-out", str(d / "cli.csr"))
    openssl("x509", "-req", "-in", str(d / "cli.csr"), "-CA", str(d / "ca.crt"),
            "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-days", "1",
            "-out", str(d / "cli.crt"))
    srv, _, _ = make_server(config=ServerConfig(
        port=0, token="t", token_verbs=False, tls_cert=d / "srv.crt", tls_key=d / "srv.key",
        tls_client_ca=d / "ca.crt"))
    try:
        import json

        body = json.dumps(extender_args(k8s_pod(gpus=1), ["a100-0"], True)).encode()
        with_cert = ssl.create_default_context(cafile=str(d / "srv.crt"))
        with_cert.load_cert_chain(str(d / "cli.crt"), str(d / "cli.key"))
        req = urllib.request.Request(f"{srv.url}/filter", data=body, method="POST")
        with urllib.request.urlopen(req, context=with_cert) as r:  # no token needed
            assert json.loads(r.read())["NodeNames"] == ["a100-0"]
        without = ssl.create_default_context(cafile=str(d / "srv.crt"))
        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen(req, context=without).read()
    finally:
        srv.stop()
