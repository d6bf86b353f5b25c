"""A small Kubernetes API server on loopback, for the extender's tests.

It speaks the parts of the real protocol gsched uses, over real HTTP:
- list (`GET /api/v1/nodes`, `GET /api/v1/pods`) with a `resourceVersion`;
- watch (`?watch=true&resourceVersion=N`): a chunked stream of JSON lines, every event
  after N, then new ones as they happen, until `timeoutSeconds`; a version older than
  the last `compact()` is answered with an `ERROR` event of code 410 (or, with
  `gone_as_status`, an HTTP 410); `drop_watches()` cuts open streams mid-chunk;
- pods: get, merge-patch, `POST .../binding` (UID precondition, 409 if bound) and
  `POST .../eviction` (deletes the pod; 429 as for a PodDisruptionBudget when told to);
- `coordination.k8s.io/v1` Leases: get, create (409 if present), replace (409 unless
  `metadata.resourceVersion` is current).
"""

from __future__ import annotations

import copy
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse


class _QuietServer(ThreadingHTTPServer):
    """A client hanging up mid keep-alive is routine here, not worth a traceback."""

    def handle_error(self, request, client_address) -> None:  # noqa: ANN001
        pass


def _merge(dst: dict, patch: dict) -> None:
    for k, v in patch.items():
        if v is None:
            dst.pop(k, None)
        elif isinstance(v, dict) and isinstance(dst.get(k), dict):
            _merge(dst[k], v)
        else:
            dst[k] = copy.deepcopy(v)


def status(code: int, reason: str, message: str = "") -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message or reason, "reason": reason, "code": code}


class FakeKubeAPI:
    def __init__(self) -> None:
        self.rv = 100
        self.nodes: dict[str, dict] = {}
        self.pods: dict[tuple[str, str], dict] = {}
        self.leases: dict[tuple[str, str], dict] = {}
        self.events: dict[str, list[tuple[int, str, dict]]] = {"nodes": [], "pods": []}
        self.compacted = {"nodes": 0, "pods": 0}
        self.gone_as_status = False
        self.gone_once = {"nodes": False, "pods": False}
        self.cond = threading.Condition()
        self.drop_generation = 0
        self.requests: list[tuple[str, str]] = []
        self.watches_opened = {"nodes": 0, "pods": 0}
        self.bindings: list[tuple[str, str, str]] = []
        self.evictions: list[tuple[str, str]] = []
        self.refuse_evictions = False
        self._open: set[socket.socket] = set()
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def do_GET(self) -> None:
                api._route(self, "GET")

            def do_POST(self) -> None:
                api._route(self, "POST")

            def do_PUT(self) -> None:
                api._route(self, "PUT")

            def do_PATCH(self) -> None:
                api._route(self, "PATCH")

        self.httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    # -------------------------------------------------------------- control
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def start(self) -> FakeKubeAPI:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.drop_watches()
        self.httpd.shutdown()
        self.httpd.server_close()

    def _bump(self, obj: dict) -> int:
        self.rv += 1
        obj.setdefault("metadata", {})["resourceVersion"] = str(self.rv)
        return self.rv

    def _emit(self, kind: str, typ: str, obj: dict) -> None:
        rv = self._bump(obj)
        self.events[kind].append((rv, typ, copy.deepcopy(obj)))
        self.cond.notify_all()

    def put_node(self, obj: dict) -> None:
        with self.cond:
            name = obj["metadata"]["name"]
            typ = "MODIFIED" if name in self.nodes else "ADDED"
            self.nodes[name] = obj
            self._emit("nodes", typ, obj)

    def delete_node(self, name: str) -> None:
        with self.cond:
            obj = self.nodes.pop(name)
            self._emit("nodes", "DELETED", obj)

    def put_pod(self, obj: dict) -> None:
        with self.cond:
            key = (obj["metadata"].get("namespace", "default"), obj["metadata"]["name"])
            obj["metadata"].setdefault("namespace", key[0])
            typ = "MODIFIED" if key in self.pods else "ADDED"
            self.pods[key] = obj
            self._emit("pods", typ, obj)

    def delete_pod(self, namespace: str, name: str) -> None:
        with self.cond:
            obj = self.pods.pop((namespace, name))
            self._emit("pods", "DELETED", obj)

    def compact(self, kind: str) -> None:
        """Forget history: watches from an older version get 410 Gone."""
        with self.cond:
            self.compacted[kind] = self.rv
            self.events[kind] = []

    def expire(self, kind: str) -> None:
        """The next watch of `kind` is told its version is too old (410 Gone)."""
        with self.cond:
            self.gone_once[kind] = True

    def drop_watches(self) -> None:
        """Cut every open watch connection without ending its stream properly."""
        with self.cond:
            self.drop_generation += 1
            self.cond.notify_all()
            socks = list(self._open)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def core(self) -> Any:
        """A `kubernetes` CoreV1Api client pointed at this server."""
        from kubernetes import client

        cfg = client.Configuration()
        cfg.host = self.url
        return client.CoreV1Api(client.ApiClient(cfg))

    def synced_extender(self, policy: str = "tidal") -> tuple[Any, Any, Any]:
        """(core client, an Extender on `policy`, its started KubeSync) mirroring this
        server's nodes and pods, as `gsched serve` does in Kubernetes mode."""
        from gsched.models import Cluster
        from gsched.scheduler.extender.kube import KubeSync
        from gsched.scheduler.extender.verbs import Extender
        from gsched.scheduler.policies.registry import make_policy

        core = self.core()
        ext = Extender(Cluster(nodes=[]), make_policy(policy))
        sync = KubeSync(core, ext, watch_timeout_s=5, backoff_s=(0.01, 0.05)).start()
        return core, ext, sync

    def wait_for(self, pred: Any, timeout: float = 10.0) -> bool:
        """Wait (bounded) until pred() holds; for tests, never a timed assert."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if pred():
                return True
            time.sleep(0.01)
        return pred()

    # ------------------------------------------------------------- serving
    def _send(self, h: BaseHTTPRequestHandler, code: int, obj: Any) -> None:
        body = json.dumps(obj).encode()
        h.send_response(code)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def _body(self, h: BaseHTTPRequestHandler) -> Any:
        n = int(h.headers.get("Content-Length") or 0)
        return json.loads(h.rfile.read(n) or b"null")

    def _route(self, h: BaseHTTPRequestHandler, method: str) -> None:
        url = urlparse(h.path)
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        parts = [p for p in url.path.split("/") if p]
        self.requests.append((method, h.path))
        if parts[:2] == ["api", "v1"] and len(parts) == 3 and parts[2] in ("nodes", "pods"):
            kind = parts[2]
            if q.get("watch") in ("true", "1"):
                return self._watch(h, kind, int(q.get("resourceVersion") or 0),
                                   float(q.get("timeoutSeconds") or 30))
            with self.cond:
                items = list(self.nodes.values() if kind == "nodes" else self.pods.values())
                body = {"kind": "NodeList" if kind == "nodes" else "PodList",
                        "apiVersion": "v1", "metadata": {"resourceVersion": str(self.rv)},
                        "items": copy.deepcopy(items)}
            return self._send(h, 200, body)
        if parts[:3] == ["api", "v1", "namespaces"] and len(parts) >= 6 and parts[4] == "pods":
            return self._pod(h, method, parts[3], parts[5], parts[6:])
        if parts[:4] == ["apis", "coordination.k8s.io", "v1", "namespaces"] and \
                len(parts) >= 6 and parts[5] == "leases":
            return self._lease(h, method, parts[4], parts[6] if len(parts) > 6 else None)
        self._send(h, 404, status(404, "NotFound", h.path))

    def _pod(self, h: BaseHTTPRequestHandler, method: str, ns: str, name: str,
             rest: list[str]) -> None:
        with self.cond:
            pod = self.pods.get((ns, name))
            if pod is None:
                self._body(h) if method != "GET" else None
                return self._send(h, 404, status(404, "NotFound", f"pod {ns}/{name}"))
            if method == "GET" and not rest:
                return self._send(h, 200, pod)
            if method == "PATCH" and not rest:
                _merge(pod, self._body(h))
                self._emit("pods", "MODIFIED", pod)
                return self._send(h, 200, pod)
            if method == "POST" and rest == ["eviction"]:
                self._body(h)
                if self.refuse_evictions:
                    return self._send(h, 429, status(429, "TooManyRequests",
                                                     "Cannot evict pod as it would violate "
                                                     "the pod's disruption budget."))
                self.evictions.append((ns, name))
                del self.pods[(ns, name)]
                self._emit("pods", "DELETED", pod)
                return self._send(h, 201, {"kind": "Status", "status": "Success",
                                           "code": 201, "metadata": {}})
            if method == "POST" and rest == ["binding"]:
                b = self._body(h)
                uid = (b.get("metadata") or {}).get("uid")
                if uid and uid != pod["metadata"].get("uid"):
                    return self._send(h, 409, status(409, "Conflict", "uid precondition"))
                if pod.get("spec", {}).get("nodeName"):
                    return self._send(h, 409, status(409, "Conflict", "already assigned"))
                node = b["target"]["name"]
                pod.setdefault("spec", {})["nodeName"] = node
                self.bindings.append((ns, name, node))
                self._emit("pods", "MODIFIED", pod)
                return self._send(h, 201, {"kind": "Status", "status": "Success",
                                           "code": 201, "metadata": {}})
        self._send(h, 405, status(405, "MethodNotAllowed"))

    def _lease(self, h: BaseHTTPRequestHandler, method: str, ns: str,
               name: str | None) -> None:
        with self.cond:
            if method == "GET" and name:
                lease = self.leases.get((ns, name))
                if lease is None:
                    return self._send(h, 404, status(404, "NotFound", f"lease {name}"))
                return self._send(h, 200, lease)
            if method == "POST" and name is None:
                body = self._body(h)
                key = (ns, body["metadata"]["name"])
                if key in self.leases:
                    return self._send(h, 409, status(409, "AlreadyExists"))
                body["metadata"]["namespace"] = ns
                self._bump(body)
                self.leases[key] = body
                return self._send(h, 201, body)
            if method == "PUT" and name:
                body = self._body(h)
                cur = self.leases.get((ns, name))
                if cur is None:
                    return self._send(h, 404, status(404, "NotFound"))
                if body["metadata"].get("resourceVersion") != cur["metadata"]["resourceVersion"]:
                    return self._send(h, 409, status(409, "Conflict", "object was modified"))
                self._bump(body)
                self.leases[(ns, name)] = body
                return self._send(h, 200, body)
        self._send(h, 405, status(405, "MethodNotAllowed"))

    def _watch(self, h: BaseHTTPRequestHandler, kind: str, since: int, timeout: float) -> None:
        with self.cond:
            self.watches_opened[kind] += 1
            gone = since < self.compacted[kind] or self.gone_once[kind]
            self.gone_once[kind] = False
            if gone and self.gone_as_status:
                return self._send(h, 410, status(410, "Expired", "too old resource version"))
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        sock = h.connection
        with self.cond:
            self._open.add(sock)

        def chunk(obj: dict) -> None:
            data = json.dumps(obj).encode() + b"\n"
            h.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            h.wfile.flush()

        try:
            if gone:
                chunk({"type": "ERROR", "object": status(410, "Expired",
                                                         "too old resource version")})
                h.wfile.write(b"0\r\n\r\n")
                return
            gen = self.drop_generation
            end = time.monotonic() + timeout
            sent = since
            while True:
                with self.cond:
                    pending = [e for e in self.events[kind] if e[0] > sent]
                    if not pending:
                        if self.drop_generation != gen:
                            raise ConnectionAbortedError
                        left = end - time.monotonic()
                        if left <= 0:
                            break
                        self.cond.wait(min(left, 0.2))
                        continue
                for rv, typ, obj in pending:
                    chunk({"type": typ, "object": obj})
                    sent = rv
            h.wfile.write(b"0\r\n\r\n")
            h.wfile.flush()
        except (ConnectionAbortedError, OSError):
            h.close_connection = True
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        finally:
            with self.cond:
                self._open.discard(sock)


def node(name: str, gpus: int = 8, product: str = "NVIDIA-A100-SXM4-80GB",
         cpu: str = "96", memory: str = "1024Gi", labels: dict | None = None) -> dict:
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"nvidia.com/gpu.product": product,
                                                  **(labels or {})}},
            "status": {"capacity": {"nvidia.com/gpu": str(gpus), "cpu": cpu,
                                    "memory": memory},
                       "allocatable": {"nvidia.com/gpu": str(gpus), "cpu": cpu,
                                       "memory": memory}}}


def pod(name: str, uid: str, *, gpus: int | None = None, milli: int | None = None,
        node_name: str | None = None, annotations: dict | None = None,
        namespace: str = "default", phase: str = "Pending", cpu: str | None = None,
        owner: tuple[str, str] | None = None, priority: int | None = None) -> dict:
    req: dict[str, str] = {}
    if gpus is not None:
        req["nvidia.com/gpu"] = str(gpus)
    if milli is not None:
        req["gsched.io/gpu-milli"] = str(milli)
    if cpu is not None:
        req["cpu"] = cpu
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "uid": uid,
                            "annotations": dict(annotations or {})}
    if owner:
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": owner[0],
                                    "name": owner[1], "uid": "o-" + uid, "controller": True}]
    spec: dict[str, Any] = {"schedulerName": "gsched", "containers": [
        {"name": "main", "image": "busybox", "resources": {"requests": req, "limits": {
            k: v for k, v in req.items() if k != "cpu"}}}]}
    if node_name:
        spec["nodeName"] = node_name
    if priority is not None:
        spec["priority"] = priority
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec,
            "status": {"phase": phase}}
