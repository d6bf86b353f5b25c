"""The Kubernetes edge: list+watch Nodes and Pods into the extender, bind pods.

`KubeSync` keeps an `Extender`'s state equal to the cluster's: it lists Nodes and Pods
(remembering each list's `resourceVersion`), then watches each from there in its own
thread. A dropped or timed-out watch resumes from the last version seen, after an
exponential backoff (capped, with jitter) when it failed; `410 Gone` (the version is
too old, as an HTTP status or an `ERROR` event) means list again. Watch bookmarks keep
the version fresh on quiet clusters.

Inventory: a node's GPUs are its allocatable (else capacity) `nvidia.com/gpu`; the GPU
model comes from the first of `GPU_MODEL_LABELS` it carries (GPU feature discovery sets
`nvidia.com/gpu.product`), normalised to gsched's model names (`NVIDIA-A100-SXM4-80GB`
→ `A100`) when it names one of them; GPU memory from `nvidia.com/gpu.memory` (MiB).
Node status heartbeats change nothing gsched reads, so they never rebuild the state.

Pods that hold resources (bound, not finished) are booked on their node, a GPU pod on
the GPUs of its `gsched.io/gpus` annotation, else those the store recorded, else the
policy's choice. Pending pods are kept so `bind` can find a pod by name.

`KubeBinder` is the extender's binder: annotate the pod with its GPUs, then create its
`Binding` (with the pod's UID as precondition, as kube-scheduler does).

The official `kubernetes` client does config, auth and TLS; objects travel as plain
JSON (`_preload_content=False`), since deserialising thousands of `V1Node`s into
client models would cost seconds per relist.
"""

from __future__ import annotations

import json
import logging
import random
import re
import threading
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException
from kubernetes.watch.watch import iter_resp_lines
from pydantic import ValidationError

from gsched.errors import UnavailableError
from gsched.models import DEFAULT_GPU_MEMORY_MIB, Cluster, Node
from gsched.scheduler.extender import pods as podlib
from gsched.scheduler.extender.verbs import Extender
from gsched.scheduler.extender.wire import WireError

log = logging.getLogger(__name__)

GPU_MODEL_LABELS = ("gsched.io/gpu-model", "nvidia.com/gpu.product",
                    "cloud.google.com/gke-accelerator", "k8s.amazonaws.com/accelerator")
GPU_MEMORY_LABEL = "nvidia.com/gpu.memory"
_KNOWN_MODELS = sorted((m for m in DEFAULT_GPU_MEMORY_MIB if m != "default"),
                       key=len, reverse=True)


def load_kube_config(kubeconfig: str | None = None) -> client.ApiClient:
    """In-cluster config when running in a pod (and no kubeconfig given), else kubeconfig."""
    from kubernetes import config

    try:
        if kubeconfig is None:
            try:
                config.load_incluster_config()
                return client.ApiClient()
            except config.ConfigException:
                pass
        cfg = client.Configuration()
        config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
        return client.ApiClient(cfg)
    except (config.ConfigException, OSError, TypeError) as e:
        raise UnavailableError(f"no Kubernetes API server configured: {e}") from None


def gpu_model(product: str) -> str:
    """gsched's name for a GPU product label (`Tesla-T4` → `T4`); else the label itself."""
    tokens = [t for t in re.split(r"[-_ .]+", product.upper()) if t]
    for model in _KNOWN_MODELS:
        for t in tokens:
            if t == model or (t.startswith(model) and not t[len(model)].isdigit()):
                return model
    return product


def _quantity(v: Any) -> float:
    from kubernetes.utils import parse_quantity

    try:
        return float(parse_quantity(v))
    except (ValueError, TypeError, ArithmeticError):
        return 0.0


def node_from_k8s(obj: Mapping[str, Any]) -> Node | None:
    """The GPU inventory of a Node object; None if it has no GPUs (or is unreadable)."""
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    name = meta.get("name")
    if not name:
        return None
    res = status.get("allocatable") or status.get("capacity") or {}
    gpus = int(_quantity(res.get(podlib.GPU_RESOURCE, 0)))
    if gpus <= 0:
        return None
    labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    product = next((labels[k] for k in GPU_MODEL_LABELS if labels.get(k)), "default")
    mem = int(_quantity(labels.get(GPU_MEMORY_LABEL, 0)))
    try:
        return Node(name=name, gpu_count=min(gpus, 64), gpu_model=gpu_model(product),
                    gpu_memory_mib=max(mem, 0), cpu_milli=int(_quantity(res.get("cpu", 0)) * 1000),
                    memory_mib=int(_quantity(res.get("memory", 0)) // 2**20), labels=labels)
    except ValidationError as e:
        log.warning("node %s ignored: %s", name, e.errors()[0]["msg"])
        return None


class KubeBinder:
    """Annotate the pod with its GPUs, then create its Binding."""

    def __init__(self, core: client.CoreV1Api) -> None:
        self.core = core

    def bind(self, namespace: str, name: str, uid: str, node: str,
             annotations: Mapping[str, str]) -> None:
        if annotations:
            try:
                self.core.patch_namespaced_pod(
                    name, namespace, {"metadata": {"annotations": dict(annotations)}},
                    _preload_content=False)
            except ApiException as e:
                raise UnavailableError(f"annotating the pod: {api_error(e)}") from None
        body = client.V1Binding(
            metadata=client.V1ObjectMeta(name=name, namespace=namespace, uid=uid or None),
            target=client.V1ObjectReference(api_version="v1", kind="Node", name=node))
        # The pods/binding subresource, as kube-scheduler uses it. _preload_content=False:
        # the client cannot deserialise the Status it gets back into a V1Binding.
        try:
            self.core.create_namespaced_pod_binding(name, namespace, body,
                                                    _preload_content=False)
        except ApiException as e:
            raise UnavailableError(api_error(e)) from None


def api_error(e: ApiException) -> str:
    """`409 Conflict: pod x is already assigned to node y`, from an ApiException."""
    message = ""
    try:
        message = json.loads(e.body or "{}").get("message", "")
    except (ValueError, AttributeError):
        pass
    return f"{e.status} {e.reason}" + (f": {message}" if message else "")


LEADER_LABEL = "gsched.io/leader"


def pod_evictor(core: client.CoreV1Api) -> Callable[[str, str], None]:
    """Evict a pod through the Eviction API (PodDisruptionBudgets and grace periods
    apply): the planner's way of moving training out before a peak."""
    def evict(namespace: str, name: str) -> None:
        body = client.V1Eviction(metadata=client.V1ObjectMeta(name=name, namespace=namespace))
        try:
            core.create_namespaced_pod_eviction(name, namespace, body, _preload_content=False)
        except ApiException as e:
            raise UnavailableError(f"evicting {namespace}/{name}: {api_error(e)}") from None
    return evict


def leader_labeller(core: client.CoreV1Api, namespace: str | None, pod: str | None
                    ) -> Callable[[bool], None]:
    """An `on_change` for the elector: label this replica's pod `gsched.io/leader=true`
    while it leads (the Service selects it), and remove the label when it stops."""
    def label(leader: bool) -> None:
        if not namespace or not pod:
            return
        patch = {"metadata": {"labels": {LEADER_LABEL: "true" if leader else None}}}
        try:
            core.patch_namespaced_pod(pod, namespace, patch, _preload_content=False)
        except ApiException as e:
            log.warning("labelling %s/%s as %s: %s", namespace, pod,
                        "leader" if leader else "follower", api_error(e))
        except Exception as e:  # API server unreachable: the lease decides anyway
            log.warning("labelling %s/%s: %s", namespace, pod, e)
    return label


class KubeSync:
    """Keeps `extender` in step with the API server; see the module docstring."""

    def __init__(self, core: client.CoreV1Api, extender: Extender, *,
                 watch_timeout_s: int = 300, backoff_s: tuple[float, float] = (0.5, 30.0),
                 rng: random.Random | None = None,
                 on_event: Callable[[str, str], None] | None = None) -> None:
        self.core = core
        self.extender = extender
        self.watch_timeout_s = watch_timeout_s
        self.backoff_s = backoff_s
        self.rng = rng or random.Random(0)
        self.on_event = on_event  # (resource, what) hook for tests and logs
        self._lock = threading.Lock()
        self.nodes: dict[str, Node] = {}
        self.pods: dict[str, podlib.PodJob] = {}      # uid -> pods holding resources
        self.pending: dict[tuple[str, str], dict] = {}  # (ns, name) -> raw pending pod
        self.rv: dict[str, str | None] = {"nodes": None, "pods": None}
        self.relists = {"nodes": 0, "pods": 0}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._streams: dict[str, Any] = {}
        self.synced = threading.Event()
        if extender.pod_lookup is None:
            extender.pod_lookup = self.pod_lookup

    # -------------------------------------------------------------- lifecycle
    def start(self) -> KubeSync:
        self.sync()
        for kind in ("nodes", "pods"):
            t = threading.Thread(target=self._run, args=(kind,), name=f"gsched-watch-{kind}",
                                 daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        for resp in list(self._streams.values()):
            try:  # unblock a watch waiting for its next event
                resp.shutdown()
            except Exception:  # noqa: BLE001 - already closed is fine
                pass
        for t in self._threads:
            t.join(timeout=10)
        self._threads.clear()

    def sync(self) -> None:
        """List both kinds and rebuild the state from scratch."""
        self._list("nodes")
        self._list("pods")
        self._rebuild()
        self.synced.set()
        self.extender.ready.set()

    def pod_lookup(self, namespace: str, name: str) -> dict | None:
        """A pending pod by name (what bind needs); asks the API server on a miss."""
        with self._lock:
            raw = self.pending.get((namespace, name))
        if raw is not None:
            return raw
        try:
            resp = self.core.read_namespaced_pod(name, namespace, _preload_content=False)
            return json.loads(resp.data)
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    # ---------------------------------------------------------------- listing
    def _list_call(self, kind: str) -> Callable[..., Any]:
        return self.core.list_node if kind == "nodes" else self.core.list_pod_for_all_namespaces

    def _list(self, kind: str) -> None:
        items: list[dict] = []
        cont: str | None = None
        while True:
            kw: dict[str, Any] = {"limit": 500, "_preload_content": False,
                                  "_request_timeout": (5, 60)}
            if cont:
                kw["_continue"] = cont
            resp = self._list_call(kind)(**kw)
            body = json.loads(resp.data)
            items.extend(body.get("items") or [])
            meta = body.get("metadata") or {}
            cont = meta.get("continue")
            if not cont:
                rv = meta.get("resourceVersion")
                break
        with self._lock:
            if kind == "nodes":
                self.nodes = {}
                for obj in items:
                    node = node_from_k8s(obj)
                    if node is not None:
                        self.nodes[node.name] = node
            else:
                self.pods, self.pending = {}, {}
                for obj in items:
                    self._apply_pod("ADDED", obj)
            self.rv[kind] = rv
            self.relists[kind] += 1
        self._event(kind, "list")

    def _rebuild(self) -> None:
        # Under the lock: a pod event can never slip between this snapshot and the
        # state built from it (lock order: this lock, then the extender's).
        with self._lock:
            cluster = Cluster(nodes=sorted(self.nodes.values(), key=lambda n: n.name),
                              source="kubernetes")
            self.extender.rebuild(cluster, list(self.pods.values()))

    # --------------------------------------------------------------- watching
    def _run(self, kind: str) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                if self.rv[kind] is None:
                    self._list(kind)
                    self._rebuild()
                self._watch(kind)
                failures = 0
            except ApiException as e:
                if e.status == 410:
                    log.info("%s watch: resourceVersion too old (410 Gone); listing again", kind)
                    self.rv[kind] = None
                    continue
                failures += 1
                log.warning("%s watch failed (%s %s); retrying", kind, e.status, e.reason)
            except Exception as e:  # connection dropped, API server restarting, bad JSON
                failures += 1
                log.warning("%s watch ended: %s; retrying", kind, e)
            if failures:
                lo, hi = self.backoff_s
                delay = min(hi, lo * 2 ** min(failures - 1, 16)) * (0.5 + self.rng.random() / 2)
                self._event(kind, "backoff")
                self._stop.wait(delay)

    def _watch(self, kind: str) -> None:
        resp = self._list_call(kind)(
            watch=True, resource_version=self.rv[kind], allow_watch_bookmarks=True,
            timeout_seconds=self.watch_timeout_s, _preload_content=False,
            _request_timeout=(5, self.watch_timeout_s + 30))
        self._streams[kind] = resp
        self._event(kind, "watch")
        try:
            if self._stop.is_set():  # stop() ran while the watch was opening
                return
            for line in iter_resp_lines(resp):
                if self._stop.is_set():
                    return
                if not line:
                    continue
                ev = json.loads(line)
                typ, obj = ev.get("type"), ev.get("object") or {}
                if typ == "ERROR":
                    code = obj.get("code")
                    if code == 410:
                        raise ApiException(status=410, reason="Gone")
                    raise ApiException(status=code or 500, reason=obj.get("message", "error"))
                rv = (obj.get("metadata") or {}).get("resourceVersion")
                if typ != "BOOKMARK":
                    self._handle(kind, typ, obj)
                if rv:
                    self.rv[kind] = rv
        finally:
            self._streams.pop(kind, None)
            resp.release_conn()
        self._event(kind, "watch-end")

    def _handle(self, kind: str, typ: str, obj: dict) -> None:
        if kind == "nodes":
            node = node_from_k8s(obj) if typ != "DELETED" else None
            name = (obj.get("metadata") or {}).get("name")
            with self._lock:
                before = self.nodes.get(name)
                if node is None:
                    self.nodes.pop(name, None)
                else:
                    self.nodes[name] = node
                changed = before != node
            if changed:
                self._rebuild()
            self._event("nodes", typ)
            return
        with self._lock:
            pj = self._apply_pod(typ, obj)
            if pj is None:
                uid = (obj.get("metadata") or {}).get("uid")
                if uid:
                    self.extender.forget(uid)
            else:
                self.extender.observe(pj)
        self._event("pods", typ)

    def _apply_pod(self, typ: str, obj: dict) -> podlib.PodJob | None:
        """Update the pod tables (lock held); the PodJob to observe, None if gone."""
        meta = obj.get("metadata") or {}
        key = (str(meta.get("namespace") or "default"), str(meta.get("name") or ""))
        if typ == "DELETED":
            self.pending.pop(key, None)
            self.pods.pop(str(meta.get("uid")), None)
            return None
        try:
            pj = podlib.pod_to_job(obj, self.extender.profile, self.extender.priority_classes)
        except WireError as e:
            log.warning("pod %s/%s: %s; not accounted", *key, e)
            return None
        if pj.active:
            self.pods[pj.uid] = pj
            self.pending.pop(key, None)
        else:
            self.pods.pop(pj.uid, None)
            if not pj.node and pj.phase not in podlib.TERMINAL_PHASES:
                self.pending[key] = obj
            else:
                self.pending.pop(key, None)
        return pj

    def _event(self, kind: str, what: str) -> None:
        if self.on_event is not None:
            self.on_event(kind, what)
