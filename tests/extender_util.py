"""Helpers for the extender tests: requests built exactly as kube-scheduler builds them.

kube-scheduler marshals `extenderv1.ExtenderArgs` etc. with Go's encoding/json: Go field
names (no JSON tags), nil pointers as `null`; the Pod and Nodes inside are Kubernetes
objects, which the `kubernetes` client serialises the way the API server would.
"""

from __future__ import annotations

import json
import socket
from typing import Any

from kubernetes import client

from gsched.models import Cluster, Node
from gsched.scheduler.extender.metrics import SchedulerMetrics
from gsched.scheduler.extender.server import ExtenderServer, ServerConfig
from gsched.scheduler.extender.verbs import Extender
from gsched.scheduler.policies.registry import make_policy

API = client.ApiClient()


def k8s_pod(name: str = "p", uid: str = "uid-p", *, gpus: int | None = None,
            milli: int | None = None, annotations: dict | None = None,
            namespace: str = "default", priority: int | None = None,
            rv: str = "1") -> client.V1Pod:
    req: dict[str, str] = {"cpu": "1", "memory": "2Gi"}
    if gpus is not None:
        req["nvidia.com/gpu"] = str(gpus)
    if milli is not None:
        req["gsched.io/gpu-milli"] = str(milli)
    limits = {k: v for k, v in req.items() if k not in ("cpu", "memory")}
    return client.V1Pod(
        api_version="v1", kind="Pod",
        metadata=client.V1ObjectMeta(name=name, namespace=namespace, uid=uid,
                                     resource_version=rv, annotations=annotations),
        spec=client.V1PodSpec(
            scheduler_name="gsched", priority=priority,
            containers=[client.V1Container(
                name="main", image="registry.example/app:1",
                resources=client.V1ResourceRequirements(requests=req, limits=limits or None))]))


def k8s_node(name: str, gpus: int = 8) -> client.V1Node:
    res = {"cpu": "96", "memory": "1024Gi", "nvidia.com/gpu": str(gpus), "pods": "110"}
    return client.V1Node(
        api_version="v1", kind="Node",
        metadata=client.V1ObjectMeta(name=name, labels={
            "kubernetes.io/hostname": name, "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}),
        status=client.V1NodeStatus(capacity=res, allocatable=res, conditions=[
            client.V1NodeCondition(type="Ready", status="True")]))


def ser(obj: Any) -> Any:
    return API.sanitize_for_serialization(obj)


def extender_args(pod: client.V1Pod, names: list[str], cache: bool) -> dict:
    """`ExtenderArgs` as kube-scheduler marshals it in either node-cache mode."""
    if cache:
        return {"Pod": ser(pod), "Nodes": None, "NodeNames": names}
    nodes = client.V1NodeList(items=[k8s_node(n) for n in names])
    return {"Pod": ser(pod), "Nodes": ser(nodes), "NodeNames": None}


def small_cluster() -> Cluster:
    """a100-0 (8 free), a100-1 (8, six taken by the caller), t4 (4 T4), small (2 A100)."""
    return Cluster(nodes=[
        Node(name="a100-0", gpu_count=8, gpu_model="A100"),
        Node(name="a100-1", gpu_count=8, gpu_model="A100"),
        Node(name="t4", gpu_count=4, gpu_model="T4"),
        Node(name="small", gpu_count=2, gpu_model="A100"),
    ])


def make_server(policy: str = "binpack", cluster: Cluster | None = None,
                config: ServerConfig | None = None, **kw: Any
                ) -> tuple[ExtenderServer, Extender, SchedulerMetrics]:
    metrics = SchedulerMetrics()
    ext = Extender(cluster or small_cluster(), make_policy(policy), metrics=metrics, **kw)
    ext.ready.set()
    srv = ExtenderServer(ext, metrics, config or ServerConfig(port=0),
                         ready=ext.ready.is_set).start()
    return srv, ext, metrics


def raw_http(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes, return whatever comes back before the server closes or pauses."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        try:
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        out = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
        except (TimeoutError, ConnectionError):
            pass
    return out


def post(port: int, path: str, body: Any, headers: dict | None = None) -> tuple[int, Any]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn.request("POST", path, body=data, headers={"Content-Type": "application/json",
                                                   **(headers or {})})
    resp = conn.getresponse()
    raw = resp.read()
    conn.close()
    try:
        return resp.status, json.loads(raw)
    except ValueError:
        return resp.status, raw
