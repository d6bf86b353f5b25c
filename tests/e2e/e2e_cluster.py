"""The e2e harness: a real Kubernetes 1.20 control plane, kube-scheduler, gsched replicas.

`ControlPlane` wraps `start.sh`/`stop.sh` (etcd + kube-apiserver on loopback) and acts as
the cluster's owner (admin token): it applies `manifests/`, creates Node objects (there
is no kubelet), mints ServiceAccount tokens with the TokenRequest API, and starts
kube-scheduler 1.20 with the v1beta1 variant of the manifests' scheduler configuration,
running as the manifests' own `gsched-kube-scheduler` ServiceAccount. The extender URL
in that configuration points at `LeaderProxy`, which stands in for the Service that
selects the leading gsched replica: each request goes to the replica named in the Lease.
`GschedReplica` is one `gsched serve` process, run with the token of the manifests'
`gsched-scheduler` ServiceAccount, so every test exercises the RBAC the manifests grant.
"""

from __future__ import annotations

import copy
import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from kubernetes import client, dynamic
from kubernetes.client.rest import ApiException
from kubernetes.utils import parse_quantity

from gsched.models import DEFAULT_SLOTS, resample_profile

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
MANIFESTS = ROOT / "manifests"
SCHED_CONFIG_V1BETA1 = MANIFESTS / "kube-scheduler-config-v1beta1.yaml"
GSCHED = ROOT / ".venv" / "bin" / "gsched"
NS = "gsched-system"
AUDIENCE = "https://kubernetes.default.svc"
#: API versions newer than 1.20 serves, and the 1.20 version of the same kind
DOWNGRADE = {("policy/v1", "PodDisruptionBudget"): "policy/v1beta1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred: Callable[[], Any], timeout: float, what: str, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def kubeconfig(path: Path, server: str, ca: str, token: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "e2e", "cluster": {"server": server,
                                                 "certificate-authority": ca}}],
        "users": [{"name": "u", "user": {"token": token}}],
        "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "u"}}],
        "current-context": "e2e"}))
    return path


def api_client(server: str, ca: str, token: str) -> client.ApiClient:
    cfg = client.Configuration()
    cfg.host = server
    cfg.ssl_ca_cert = ca
    cfg.api_key = {"authorization": token}
    cfg.api_key_prefix = {"authorization": "Bearer"}
    return client.ApiClient(cfg)


def manifest_docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((MANIFESTS / name).read_text()) if d]


class ControlPlane:
    def __init__(self, state: Path) -> None:
        self.state = state
        self.procs: list[subprocess.Popen] = []

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> ControlPlane:
        r = subprocess.run(["bash", str(HERE / "start.sh"), str(self.state)],
                           capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            raise RuntimeError(f"start.sh failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
        env = dict(line.split("=", 1) for line in (self.state / "env").read_text().split())
        self.server, self.ca, self.admin_token = env["API_SERVER"], env["API_CA"], \
            env["ADMIN_TOKEN"]
        self.k8s_bin = Path(env["K8S_BIN"])
        self.admin = api_client(self.server, self.ca, self.admin_token)
        self.core = client.CoreV1Api(self.admin)
        return self

    def stop(self) -> None:
        for p in self.procs:
            stop_process(p)
        subprocess.run(["bash", str(HERE / "stop.sh"), str(self.state)], timeout=60)

    def spawn(self, name: str, args: list[str], env: dict | None = None) -> subprocess.Popen:
        log = open(self.state / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
        p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                             env={**os.environ, **(env or {})}, start_new_session=True)
        (self.state / f"{name}.pid").write_text(str(p.pid))
        self.procs.append(p)
        return p

    # --------------------------------------------------------------- manifests
    def apply_manifests(self) -> dict[str, list[str]]:
        """Create every object in manifests/ that 1.20 serves; objects of API versions
        newer than 1.20 go through a server-side dry run in the 1.20 version of their
        kind. Returns what happened to each object: created / dry-run / skipped."""
        dyn = dynamic.DynamicClient(self.admin)
        done: dict[str, list[str]] = {"created": [], "dry-run": [], "skipped": []}
        files = sorted(p.name for p in MANIFESTS.glob("*.yaml") if p != SCHED_CONFIG_V1BETA1)
        files.remove("namespace.yaml")
        for name in ["namespace.yaml", *files]:
            for d in manifest_docs(name):
                key = f"{d['kind']}/{d['metadata'].get('namespace', '')}/{d['metadata']['name']}"
                body, dry = copy.deepcopy(d), None
                old = DOWNGRADE.get((d["apiVersion"], d["kind"]))
                if old:
                    body["apiVersion"], dry = old, "All"
                try:
                    res = dyn.resources.get(api_version=body["apiVersion"], kind=body["kind"])
                except Exception:  # noqa: BLE001 - a CRD this cluster does not have
                    done["skipped"].append(f"{key} ({d['apiVersion']} not served)")
                    continue
                ns = d["metadata"].get("namespace") if res.namespaced else None
                try:
                    res.create(body=body, namespace=ns, dry_run=dry)
                except ApiException as e:
                    if e.status != 409:
                        raise RuntimeError(f"{name}: {key}: {e.status} {e.body}") from None
                done["dry-run" if dry else "created"].append(key)
        return done

    def token(self, sa: str, namespace: str = NS, seconds: int = 3600 * 6) -> str:
        """A token of the ServiceAccount (TokenRequest: 1.20 has no token controller)."""
        req = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[AUDIENCE], expiration_seconds=seconds))
        return self.core.create_namespaced_service_account_token(sa, namespace, req) \
            .status.token

    def kubeconfig_for(self, sa: str) -> Path:
        return kubeconfig(self.state / f"{sa}.kubeconfig", self.server, self.ca,
                          self.token(sa))

    # ------------------------------------------------------------ kube-scheduler
    def start_kube_scheduler(self, extender_url: str) -> subprocess.Popen:
        cfg = yaml.safe_load(SCHED_CONFIG_V1BETA1.read_text())
        cfg["clientConnection"] = {"kubeconfig":
                                   str(self.kubeconfig_for("gsched-kube-scheduler"))}
        cfg["extenders"][0]["urlPrefix"] = extender_url
        path = self.state / "kube-scheduler.yaml"
        path.write_text(yaml.safe_dump(cfg))
        p = self.spawn("kube-scheduler", [
            str(self.k8s_bin / "kube-scheduler"), f"--config={path}", "--port=0",
            f"--secure-port={free_port()}", "--bind-address=127.0.0.1",
            f"--authentication-kubeconfig={cfg['clientConnection']['kubeconfig']}",
            f"--authorization-kubeconfig={cfg['clientConnection']['kubeconfig']}", "--v=2"])
        lease = client.CoordinationV1Api(self.admin)

        def leading() -> bool:
            if p.poll() is not None:
                raise RuntimeError("kube-scheduler exited: "
                                   + (self.state / "kube-scheduler.log").read_text()[-3000:])
            try:
                le = lease.read_namespaced_lease("gsched-kube-scheduler", NS)
            except ApiException:
                return False
            return bool(le.spec.holder_identity)

        wait_for(leading, 60, "kube-scheduler to take its lease")
        return p

    # ------------------------------------------------------------------- objects
    def add_nodes(self, nodes: Iterable[tuple[str, int]], model: str = "A100",
                  cpu: str = "64", memory: str = "512Gi") -> list[str]:
        names = []
        for name, gpus in nodes:
            res = {"nvidia.com/gpu": str(gpus), "cpu": cpu, "memory": memory, "pods": "110"}
            body = {"apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": name, "labels": {"gsched.io/gpu-model": model,
                                                          "gsched.io/e2e": "true"}},
                    "status": {"capacity": res, "allocatable": res}}
            self.core.create_node(body)
            # status is ignored on create: write it through the status subresource
            self.core.patch_node_status(name, {"status": {
                "capacity": res, "allocatable": res,
                "conditions": [{"type": "Ready", "status": "True", "reason": "e2e",
                                "lastHeartbeatTime": None}]}})
            names.append(name)
        return names

    def delete_nodes(self) -> None:
        for n in self.core.list_node(label_selector="gsched.io/e2e=true").items:
            try:
                self.core.delete_node(n.metadata.name)
            except ApiException as e:
                if e.status != 404:
                    raise

    def namespace(self, name: str) -> str:
        self.core.create_namespace({"metadata": {"name": name}})
        return name

    def delete_pods(self, namespace: str) -> None:
        for p in self.core.list_namespaced_pod(namespace).items:
            self.delete_pod(namespace, p.metadata.name)

    def delete_pod(self, namespace: str, name: str) -> None:
        """What a kubelet does at the end: the pod is gone at once (grace period 0)."""
        try:
            self.core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
        except ApiException as e:
            if e.status != 404:
                raise

    def pods(self, namespace: str) -> list[dict]:
        resp = self.core.list_namespaced_pod(namespace, _preload_content=False)
        return json.loads(resp.data)["items"]


def pod(name: str, *, gpus: int = 0, milli: int = 0, kind: str = "training",
        profile: str | None = None, utilization: float | None = None,
        labels: dict | None = None, node: str | None = None,
        annotations: dict | None = None, scheduler: str = "gsched") -> dict:
    """A pod as a user writes it: whole GPUs (nvidia.com/gpu) or a share (gpu-milli)."""
    limits = {}
    if gpus:
        limits["nvidia.com/gpu"] = str(gpus)
    if milli:
        limits["gsched.io/gpu-milli"] = str(milli)
    ann = {"gsched.io/kind": kind, **(annotations or {})}
    if profile is not None:
        ann["gsched.io/profile"] = profile
    if utilization is not None:
        ann["gsched.io/utilization"] = str(utilization)
    spec: dict[str, Any] = {"schedulerName": scheduler, "terminationGracePeriodSeconds": 0,
                            "containers": [{"name": "main", "image": "busybox",
                                            "resources": {"limits": limits}}]}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels or {}, "annotations": ann},
            "spec": spec}


def gpus_of(p: dict) -> tuple[int, ...]:
    text = (p["metadata"].get("annotations") or {}).get("gsched.io/gpus", "")
    return tuple(int(g) for g in text.split(",") if g)


def share_of(p: dict) -> tuple[float, int]:
    """(share of each GPU, GPU count) a pod holds, from its limits."""
    lim = p["spec"]["containers"][0]["resources"].get("limits") or {}
    if "nvidia.com/gpu" in lim:
        return 1.0, int(parse_quantity(lim["nvidia.com/gpu"]))
    milli = int(parse_quantity(lim.get("gsched.io/gpu-milli", 0)))  # "2000" comes back "2k"
    return (milli / 1000, 1) if milli < 1000 else (1.0, milli // 1000)


def assert_no_gpu_double_booked(pods: list[dict], gpu_counts: dict[str, int],
                                by_profile: bool = False) -> None:
    """Every bound GPU pod carries gsched.io/gpus, as many as it asked for, on GPUs its
    node has, and no GPU is booked beyond capacity: by requests, or - for `tidal`,
    which shares a GPU between pods whose peaks interleave - by their summed daily load
    (share x profile) in every slot, whole-GPU pods (nvidia.com/gpu) alone on theirs."""
    used: dict[tuple[str, int], np.ndarray] = {}
    whole: dict[tuple[str, int], int] = {}
    for p in pods:
        node = p["spec"].get("nodeName")
        if not node or p["metadata"].get("deletionTimestamp"):
            continue
        share, count = share_of(p)
        if not count:
            continue
        gpus = gpus_of(p)
        name = p["metadata"]["name"]
        assert len(gpus) == count and len(set(gpus)) == count, (name, gpus)
        ann = p["metadata"].get("annotations") or {}
        load = np.full(DEFAULT_SLOTS, share)
        if by_profile and ann.get("gsched.io/profile"):
            vals = np.array([float(x) for x in ann["gsched.io/profile"].split(";")])
            load = share * resample_profile(vals, DEFAULT_SLOTS)
        lim = p["spec"]["containers"][0]["resources"].get("limits") or {}
        for g in gpus:
            assert 0 <= g < gpu_counts[node], (name, node, g)
            used[(node, g)] = used.get((node, g), 0.0) + load
            if "nvidia.com/gpu" in lim:
                whole[(node, g)] = whole.get((node, g), 0) + 1
    over = {k: float(v.max()) for k, v in used.items() if v.max() > 1.0 + 1e-9}
    assert not over, f"GPUs booked beyond capacity: {over}"
    shared = {k: n for k, n in whole.items() if n > 1 or used[k].max() > 1.0 + 1e-9}
    assert not shared, f"whole GPUs given twice: {shared}"


def stop_process(p: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
    if p.poll() is not None:
        return
    p.send_signal(sig)
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(10)


class GschedReplica:
    """One `gsched serve` against the control plane, as the gsched-scheduler SA."""

    def __init__(self, cp: ControlPlane, identity: str, *, policy: str = "tidal",
                 db: Path | None = None, extra: Iterable[str] = ()) -> None:
        self.cp, self.identity, self.port = cp, identity, free_port()
        self.db = db or cp.state / f"{identity}.db"
        self.kubeconfig = cp.state / "gsched-scheduler.kubeconfig"
        if not self.kubeconfig.exists():
            cp.kubeconfig_for("gsched-scheduler")
        self.args = [str(GSCHED), "serve", "--kubeconfig", str(self.kubeconfig),
                     "--host", "127.0.0.1", "--port", str(self.port), "--policy", policy,
                     "--db", str(self.db), "--identity", identity,
                     "--lease-namespace", NS, *extra]
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> GschedReplica:
        self.proc = self.cp.spawn(f"gsched-{self.identity}", self.args)

        def ready() -> bool:
            if self.proc.poll() is not None:
                log = (self.cp.state / f"gsched-{self.identity}.log").read_text()
                raise RuntimeError(f"gsched serve {self.identity} exited:\n{log[-3000:]}")
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False

        wait_for(ready, 60, f"gsched serve {self.identity} to be ready")
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None:
            stop_process(self.proc, sig)


def lease_holder(cp: ControlPlane, name: str = "gsched") -> str | None:
    try:
        le = client.CoordinationV1Api(cp.admin).read_namespaced_lease(name, NS)
    except ApiException:
        return None
    return le.spec.holder_identity


class LeaderProxy:
    """Stands in for the Service `gsched-scheduler`, which selects the leading replica:
    each request is forwarded to the replica the Lease names (or the only one)."""

    def __init__(self, cp: ControlPlane) -> None:
        self.cp = cp
        self.replicas: dict[str, GschedReplica] = {}
        self.port = free_port()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                target = proxy.target()
                status, data = 503, b'{"Error": "no gsched replica"}'
                if target is not None:
                    try:
                        conn = http.client.HTTPConnection("127.0.0.1", target.port, timeout=10)
                        conn.request("POST", self.path, body,
                                     {"Content-Type": "application/json"})
                        r = conn.getresponse()
                        status, data = r.status, r.read()
                        conn.close()
                    except OSError as e:
                        status, data = 502, json.dumps({"Error": str(e)}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def target(self) -> GschedReplica | None:
        live = {k: r for k, r in self.replicas.items()
                if r.proc is not None and r.proc.poll() is None}
        if len(live) == 1:
            return next(iter(live.values()))
        holder = lease_holder(self.cp)
        return live.get(holder) if holder else None

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def metric(replica: GschedReplica, name: str, **labels: str) -> float:
    """One sample of a replica's /metrics (0 when absent)."""
    with urllib.request.urlopen(replica.url + "/metrics", timeout=5) as r:
        text = r.read().decode()
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        base, _, lab = key.partition("{")
        if base == name and ",".join(sorted(lab.rstrip("}").split(","))) == want:
            return float(value)
    return 0.0
