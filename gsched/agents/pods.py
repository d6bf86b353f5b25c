"""Which pod a GPU process belongs to: `/proc/<pid>/cgroup` → container id → pod.

NVML names processes by PID. The kernel files each PID under its container's cgroup,
whose path carries the pod UID and the container id in a shape that depends on the
cgroup version, the kubelet's cgroup driver and the runtime:

- cgroup v1, cgroupfs driver: `4:memory:/kubepods/burstable/pod<uid>/<64-hex id>`
- systemd driver (v1 or v2): `0::/kubepods.slice/kubepods-burstable.slice/
  kubepods-burstable-pod<uid with _>.slice/cri-containerd-<id>.scope`
  (`crio-<id>.scope` for CRI-O, `docker-<id>.scope` for Docker)

`parse_cgroup` reads those shapes; a `PodDirectory` turns a container id (or, failing
that, a pod UID) into the pod's namespace, name, container and *workload* — the stable
key profiles are learned under, which survives pod restarts. The directory is filled by
an injectable `list_pods` callable: `kubernetes_pod_lister` (the Kubernetes API, pods on
this node) in a cluster, a plain function in tests.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict

log = logging.getLogger(__name__)

WORKLOAD_LABEL = "gsched.io/workload"

_POD_UID = re.compile(
    r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})")
_CONTAINER = re.compile(
    r"(?:^|/)(?:(cri-containerd|crio|docker|containerd)-)?([0-9a-f]{64})(?:\.scope)?$")
_TEMPLATE_HASH = re.compile(r"-[0-9a-z]{5,10}$")


@dataclass(frozen=True)
class CgroupRef:
    """What a process's cgroup path says about its container."""

    pod_uid: str | None
    container_id: str | None
    runtime: str | None


def parse_cgroup(text: str) -> CgroupRef | None:
    """Pod UID and container id from the contents of `/proc/<pid>/cgroup`, or None.

    The unified (v2) line `0::/...` wins when present; otherwise the first v1 line that
    names a container. `crio-conmon-<id>` (CRI-O's monitor process) is not a container.
    """
    lines = [ln for ln in text.splitlines() if ln.strip()]
    lines.sort(key=lambda ln: not ln.startswith("0::"))
    best: CgroupRef | None = None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        path = parts[2].strip()
        if "conmon" in path:
            continue
        uid_m = _POD_UID.search(path)
        cont_m = _CONTAINER.search(path)
        uid = uid_m.group(1).replace("_", "-") if uid_m else None
        cid = cont_m.group(2) if cont_m else None
        runtime = (cont_m.group(1) or None) if cont_m else None
        if cid or uid:
            ref = CgroupRef(pod_uid=uid, container_id=cid, runtime=runtime)
            if cid and uid:
                return ref
            best = best or ref
    return best


class PodRef(BaseModel):
    """A pod as the agent reports it."""

    model_config = ConfigDict(frozen=True)

    namespace: str
    pod: str
    container: str = ""
    workload: str
    uid: str = ""


class PodInfo(BaseModel):
    """What the directory needs to know about one pod (from the Kubernetes API)."""

    namespace: str
    name: str
    uid: str
    containers: dict[str, str] = {}  # container id (no runtime prefix) -> container name
    labels: dict[str, str] = {}
    owner_kind: str = ""
    owner_name: str = ""

    def workload(self) -> str:
        """`namespace/name` of what owns the pod, stable across restarts.

        The `gsched.io/workload` label wins; a ReplicaSet's pod-template hash is stripped
        so a Deployment's pods share one key; a bare pod is its own workload.
        """
        if self.labels.get(WORKLOAD_LABEL):
            return f"{self.namespace}/{self.labels[WORKLOAD_LABEL]}"
        name = self.owner_name or self.name
        if self.owner_kind == "ReplicaSet":
            hash_ = self.labels.get("pod-template-hash")
            if hash_ and name.endswith("-" + hash_):
                name = name[: -len(hash_) - 1]
            else:
                name = _TEMPLATE_HASH.sub("", name)
        return f"{self.namespace}/{name}"


class PodDirectory:
    """Container id / pod UID → `PodRef`, refreshed from `list_pods` when a lookup misses.

    A miss triggers at most one refresh per `min_refresh_s`, so a host process that
    belongs to no pod costs one API call per interval, not one per sample.
    """

    def __init__(self, list_pods: Callable[[], Iterable[PodInfo]],
                 min_refresh_s: float = 30.0, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self._list_pods = list_pods
        self._min_refresh_s = min_refresh_s
        self._clock = clock
        self._last_refresh: float | None = None
        self._by_container: dict[str, PodRef] = {}
        self._by_uid: dict[str, PodRef] = {}

    def refresh(self) -> None:
        by_container: dict[str, PodRef] = {}
        by_uid: dict[str, PodRef] = {}
        for p in self._list_pods():
            wl = p.workload()
            by_uid[p.uid] = PodRef(namespace=p.namespace, pod=p.name, workload=wl, uid=p.uid)
            for cid, cname in p.containers.items():
                by_container[cid] = PodRef(namespace=p.namespace, pod=p.name, container=cname,
                                           workload=wl, uid=p.uid)
        self._by_container, self._by_uid = by_container, by_uid
        self._last_refresh = self._clock()

    def lookup(self, ref: CgroupRef) -> PodRef | None:
        hit = self._find(ref)
        if hit is None and self._may_refresh():
            try:
                self.refresh()
            except Exception as e:  # the API being down must not stop sampling
                log.warning("pod lookup failed: %s", e)
                self._last_refresh = self._clock()
            hit = self._find(ref)
        return hit

    def _find(self, ref: CgroupRef) -> PodRef | None:
        if ref.container_id and ref.container_id in self._by_container:
            return self._by_container[ref.container_id]
        if ref.pod_uid and ref.pod_uid in self._by_uid:
            return self._by_uid[ref.pod_uid]
        return None

    def _may_refresh(self) -> bool:
        return (self._last_refresh is None
                or self._clock() - self._last_refresh >= self._min_refresh_s)


class PodAttributor:
    """PID → `PodRef` through `/proc/<pid>/cgroup` and a `PodDirectory`.

    A process that exited between NVML listing it and us reading its cgroup is simply
    not attributed (None), never an error.
    """

    def __init__(self, directory: PodDirectory | None, proc_root: Path | str = "/proc") -> None:
        self.directory = directory
        self.proc_root = Path(proc_root)

    def cgroup_of(self, pid: int) -> CgroupRef | None:
        try:
            text = (self.proc_root / str(pid) / "cgroup").read_text()
        except (FileNotFoundError, ProcessLookupError, PermissionError, OSError):
            return None
        return parse_cgroup(text)

    def attribute(self, pid: int) -> PodRef | None:
        ref = self.cgroup_of(pid)
        if ref is None or self.directory is None:
            return None
        return self.directory.lookup(ref)


def pod_info_from_v1(pod: object) -> PodInfo:
    """Convert a `kubernetes.client.V1Pod` into a `PodInfo`."""
    meta = pod.metadata  # type: ignore[attr-defined]
    status = pod.status  # type: ignore[attr-defined]
    containers: dict[str, str] = {}
    for cs in list(getattr(status, "container_statuses", None) or []) + list(
            getattr(status, "init_container_statuses", None) or []):
        cid = getattr(cs, "container_id", None) or ""
        if "://" in cid:
            containers[cid.split("://", 1)[1]] = cs.name
    owners = meta.owner_references or []
    ctrl = next((o for o in owners if getattr(o, "controller", False)), owners[0] if owners
                else None)
    return PodInfo(namespace=meta.namespace, name=meta.name, uid=meta.uid,
                   containers=containers, labels=dict(meta.labels or {}),
                   owner_kind=ctrl.kind if ctrl else "", owner_name=ctrl.name if ctrl else "")


def kubernetes_pod_lister(node_name: str) -> Callable[[], list[PodInfo]]:
    """A `list_pods` for `PodDirectory`: the pods the API server places on `node_name`.

    Uses the in-cluster service account (or the local kubeconfig outside a cluster).
    """
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    api = client.CoreV1Api()

    def list_pods() -> list[PodInfo]:
        pods = api.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node_name}",
                                               _request_timeout=10)
        return [pod_info_from_v1(p) for p in pods.items]

    return list_pods
