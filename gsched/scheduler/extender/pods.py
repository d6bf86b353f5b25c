"""A Kubernetes pod, as the scheduler's `Job`.

kube-scheduler hands the extender whole `v1.Pod` objects; everything gsched needs to
place one is read here, in one place, from its resource requests and annotations.

Resources (requests, or limits when requests are absent, as Kubernetes defaults them;
the pod's request is max(sum over containers, largest init container)):

- `nvidia.com/gpu: N` - N whole GPUs on one node;
- `gsched.io/gpu-milli: M` - thousandths of one GPU (500 = half a GPU); a multiple of
  1000 means that many whole GPUs. Declare it in the extender's `managedResources` with
  `ignoredByScheduler: true`, because nodes do not advertise it;
- `cpu`, `memory` - node CPU and memory, so GPU placement respects them.

Annotations (all optional):

- `gsched.io/kind`: `training` or `inference`. Default: `inference` for pods of
  Deployments, ReplicaSets, StatefulSets and DaemonSets, else `training`.
- `gsched.io/profile`: an inline daily profile `0.2;0.3;...` (values 0..1, any number
  of slots, resampled) or the name of a learned profile. Default: the learned profile
  of the pod's workload if there is one, else flat at `gsched.io/utilization`.
- `gsched.io/gpu-share`: share of one GPU in (0, 1]. Default: from
  `gsched.io/gpu-milli`, else 1.
- `gsched.io/gpu-model`: allowed GPU models, comma-separated (`A100,H100`).
- `gsched.io/gpu-memory-mib`: GPU memory the pod needs, MiB (default 0).
- `gsched.io/utilization`: flat utilisation 0..1 when there is no profile (default 1).
- `gsched.io/preemptible`: `true`/`false`, may be checkpointed and moved. Default:
  `true` for training of priority <= 0, else `false`.
- label `gsched.io/workload`: the key profiles are learned under (default: the owner,
  a Deployment's pods sharing one key).

Written by gsched at bind time: `gsched.io/gpus` - the GPU indices on the node
(`0,3`), read back when the scheduler restarts.

Priority is `spec.priority` (set by the API server from the pod's PriorityClass), else
the value of `spec.priorityClassName` in the known classes, else 0.

A pod is *managed* when it requests a GPU resource above or carries any `gsched.io/`
annotation; the extender answers unmanaged pods at once and neutrally (it still counts their CPU and
memory on the node they run on).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from kubernetes.utils import parse_quantity
from pydantic import ValidationError

from gsched.agents.pods import PodInfo as AgentPodInfo
from gsched.models import Job
from gsched.scheduler.extender.wire import WireError

GPU_RESOURCE = "nvidia.com/gpu"
SHARE_RESOURCE = "gsched.io/gpu-milli"
MANAGED_RESOURCES = (GPU_RESOURCE, SHARE_RESOURCE)
PREFIX = "gsched.io/"
ANN_KIND = PREFIX + "kind"
ANN_PROFILE = PREFIX + "profile"
ANN_SHARE = PREFIX + "gpu-share"
ANN_MODEL = PREFIX + "gpu-model"
ANN_GPU_MEM = PREFIX + "gpu-memory-mib"
ANN_UTIL = PREFIX + "utilization"
ANN_PREEMPTIBLE = PREFIX + "preemptible"
ANN_GPUS = PREFIX + "gpus"
INFERENCE_OWNERS = frozenset({"ReplicaSet", "Deployment", "StatefulSet", "DaemonSet"})
TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})

#: Built-in priority classes (values as the API server defines them).
BUILTIN_PRIORITY_CLASSES = {"system-cluster-critical": 2_000_000_000,
                            "system-node-critical": 2_000_001_000}

ProfileLookup = Callable[[str], "np.ndarray | None"]


@dataclass(frozen=True)
class PodJob:
    """What the scheduler knows about one pod."""

    uid: str
    namespace: str
    name: str
    node: str            # spec.nodeName, "" while pending
    phase: str
    managed: bool
    job: Job             # unmanaged pods: a CPU/memory-only footprint (num_gpu 0)
    workload: str
    gpus: tuple[int, ...] | None  # from the gsched.io/gpus annotation, if any
    deleting: bool = False

    @property
    def active(self) -> bool:
        """Holds resources on its node: bound and neither finished nor being deleted."""
        return bool(self.node) and self.phase not in TERMINAL_PHASES


def _err(path: str, msg: str) -> WireError:
    return WireError(f"Pod.{path}", msg)


def _quantity(v: Any, path: str) -> float:
    try:
        return float(parse_quantity(v))
    except (ValueError, TypeError, ArithmeticError) as e:
        raise _err(path, f"not a quantity: {v!r} ({e})") from None


def _requests(spec: Mapping[str, Any]) -> dict[str, float]:
    """Effective pod requests per resource name (Kubernetes' rules, without overhead)."""
    def container_requests(c: Any, path: str) -> dict[str, float]:
        if not isinstance(c, dict):
            raise _err(path, "container must be an object")
        res = c.get("resources") or {}
        if not isinstance(res, dict):
            raise _err(f"{path}.resources", "must be an object")
        out: dict[str, float] = {}
        for kind in ("limits", "requests"):  # requests override the limit default
            part = res.get(kind) or {}
            if not isinstance(part, dict):
                raise _err(f"{path}.resources.{kind}", "must be an object")
            for k, v in part.items():
                out[str(k)] = _quantity(v, f"{path}.resources.{kind}.{k}")
        return out

    total: dict[str, float] = {}
    containers = spec.get("containers") or []
    if not isinstance(containers, list):
        raise _err("spec.containers", "must be a list")
    for i, c in enumerate(containers):
        for k, v in container_requests(c, f"spec.containers[{i}]").items():
            total[k] = total.get(k, 0.0) + v
    inits = spec.get("initContainers") or []
    if not isinstance(inits, list):
        raise _err("spec.initContainers", "must be a list")
    for i, c in enumerate(inits):
        for k, v in container_requests(c, f"spec.initContainers[{i}]").items():
            total[k] = max(total.get(k, 0.0), v)
    return total


def is_managed(pod: Mapping[str, Any]) -> bool:
    """Cheap test: does gsched manage this pod (GPU resource or gsched annotation)?"""
    meta = pod.get("metadata") or {}
    anns = meta.get("annotations") if isinstance(meta, dict) else None
    if isinstance(anns, dict) and any(isinstance(k, str) and k.startswith(PREFIX)
                                      for k in anns):
        return True
    spec = pod.get("spec") or {}
    if not isinstance(spec, dict):
        return False
    for key in ("containers", "initContainers"):
        for c in spec.get(key) or []:
            res = c.get("resources") if isinstance(c, dict) else None
            if not isinstance(res, dict):
                continue
            for part in (res.get("requests"), res.get("limits")):
                if isinstance(part, dict) and any(r in part for r in MANAGED_RESOURCES):
                    return True
    return False


def _owner(meta: Mapping[str, Any]) -> tuple[str, str]:
    refs = meta.get("ownerReferences") or []
    if isinstance(refs, list):
        chosen = [r for r in refs if isinstance(r, dict) and r.get("controller")] or \
                 [r for r in refs if isinstance(r, dict)]
        if chosen:
            return str(chosen[0].get("kind", "")), str(chosen[0].get("name", ""))
    return "", ""


def parse_gpus(value: str | None) -> tuple[int, ...] | None:
    """`"0,3"` → (0, 3); None for a missing or unreadable annotation."""
    if not value or not isinstance(value, str):
        return None
    try:
        gpus = tuple(int(x) for x in value.split(",") if x.strip())
    except ValueError:
        return None
    return gpus if gpus and all(0 <= g < 64 for g in gpus) else None


def _profile(text: str, path: str) -> np.ndarray:
    try:
        vals = np.array([float(x) for x in text.replace(",", ";").split(";") if x.strip()])
    except ValueError:
        raise _err(path, "inline profile must be numbers separated by ';'") from None
    if len(vals) == 0 or not np.all(np.isfinite(vals)) or vals.min() < 0 or vals.max() > 1:
        raise _err(path, "profile values must be between 0 and 1")
    return vals


def _looks_inline(text: str) -> bool:
    return ";" in text or text.strip().replace(".", "", 1).isdigit()


def pod_to_job(pod: Mapping[str, Any], profiles: ProfileLookup | None = None,
               priority_classes: Mapping[str, int] | None = None) -> PodJob:
    """Translate a pod; WireError naming the `Pod.` field for anything unreadable."""
    if not isinstance(pod, Mapping):
        raise WireError("Pod", "must be a pod object")
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    if not isinstance(meta, dict):
        raise _err("metadata", "must be an object")
    if not isinstance(spec, dict):
        raise _err("spec", "must be an object")
    if not isinstance(status, dict):
        status = {}
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        raise _err("metadata.name", "pod has no name")
    namespace = str(meta.get("namespace") or "default")
    uid = str(meta.get("uid") or f"{namespace}/{name}")
    anns = meta.get("annotations") or {}
    labels = meta.get("labels") or {}
    if not isinstance(anns, dict):
        raise _err("metadata.annotations", "must be an object")
    if not isinstance(labels, dict):
        raise _err("metadata.labels", "must be an object")
    owner_kind, owner_name = _owner(meta)
    workload = AgentPodInfo(namespace=namespace, name=name, uid=uid,
                            labels={str(k): str(v) for k, v in labels.items()},
                            owner_kind=owner_kind, owner_name=owner_name).workload()
    node = spec.get("nodeName") or ""
    phase = str(status.get("phase") or "")
    gpus = parse_gpus(anns.get(ANN_GPUS))
    deleting = bool(meta.get("deletionTimestamp"))
    req = _requests(spec)
    cpu_milli = int(math.ceil(req.get("cpu", 0.0) * 1000 - 1e-9))
    memory_mib = int(math.ceil(req.get("memory", 0.0) / 2**20 - 1e-9))
    raw_prio = spec.get("priority")
    if isinstance(raw_prio, int) and not isinstance(raw_prio, bool):
        priority = raw_prio
    else:
        classes = {**BUILTIN_PRIORITY_CLASSES, **(priority_classes or {})}
        priority = int(classes.get(str(spec.get("priorityClassName") or ""), 0))
    if not is_managed(pod):
        # Not gsched's to place, but it still takes CPU and memory on its node.
        footprint = Job(id=uid, kind="inference", submit_time=0.0, num_gpu=0,
                        cpu_milli=max(cpu_milli, 0), memory_mib=max(memory_mib, 0),
                        priority=priority)
        return PodJob(uid, namespace, name, str(node), phase, False, footprint, workload,
                      gpus, deleting)

    whole = req.get(GPU_RESOURCE, 0.0)
    milli = req.get(SHARE_RESOURCE, 0.0)
    path_res = "spec.containers.resources"
    if whole and milli:
        raise _err(path_res, f"request either {GPU_RESOURCE} or {SHARE_RESOURCE}, not both")
    if whole != int(whole) or whole < 0 or whole > 64:
        raise _err(f"{path_res}.{GPU_RESOURCE}", f"must be a whole number 0..64, got {whole}")
    num_gpu, share = int(whole), 1.0
    if milli:
        if milli < 0 or milli != int(milli):
            raise _err(f"{path_res}.{SHARE_RESOURCE}", f"must be a whole number, got {milli}")
        if milli < 1000:
            num_gpu, share = 1, milli / 1000.0
        elif milli % 1000 == 0:
            num_gpu = int(milli // 1000)
        else:
            raise _err(f"{path_res}.{SHARE_RESOURCE}",
                       f"{int(milli)} is over one GPU but not a multiple of 1000")

    def ann(key: str) -> str | None:
        v = anns.get(key)
        return None if v is None else str(v).strip()

    def ann_float(key: str, lo: float, hi: float, lo_open: bool = False) -> float | None:
        v = ann(key)
        if v is None:
            return None
        try:
            x = float(v)
        except ValueError:
            raise _err(f"metadata.annotations.{key}", f"not a number: {v!r}") from None
        if not math.isfinite(x) or x > hi or x < lo or (lo_open and x <= lo):
            raise _err(f"metadata.annotations.{key}",
                       f"must be in {'(' if lo_open else '['}{lo}, {hi}], got {v}")
        return x

    s = ann_float(ANN_SHARE, 0.0, 1.0, lo_open=True)
    if s is not None:
        if num_gpu == 0:
            num_gpu = 1
        if num_gpu > 1 and s < 1:
            raise _err(f"metadata.annotations.{ANN_SHARE}",
                       "a share below 1 needs exactly one GPU")
        share = s
    kind = ann(ANN_KIND)
    if kind is None:
        kind = "inference" if owner_kind in INFERENCE_OWNERS else "training"
    elif kind not in ("training", "inference"):
        raise _err(f"metadata.annotations.{ANN_KIND}",
                   f"must be 'training' or 'inference', got {kind!r}")
    pre = ann(ANN_PREEMPTIBLE)
    if pre is None:
        preemptible = kind == "training" and priority <= 0
    elif pre.lower() in ("true", "1", "yes"):
        preemptible = True
    elif pre.lower() in ("false", "0", "no"):
        preemptible = False
    else:
        raise _err(f"metadata.annotations.{ANN_PREEMPTIBLE}", f"must be true or false: {pre!r}")
    models = ann(ANN_MODEL)
    gpu_models = tuple(m.strip() for m in models.split(",") if m.strip()) if models else ()
    util = ann_float(ANN_UTIL, 0.0, 1.0)
    mem = ann_float(ANN_GPU_MEM, 0.0, 1e9)
    profile, profile_name = None, None
    ptext = ann(ANN_PROFILE)
    if ptext:
        if _looks_inline(ptext):
            profile = _profile(ptext, f"metadata.annotations.{ANN_PROFILE}")
        else:
            profile_name = ptext
            if profiles is not None:
                profile = profiles(ptext)
                if profile is None and "/" not in ptext:
                    profile = profiles(f"{namespace}/{ptext}")
    elif profiles is not None:
        profile = profiles(workload)
        profile_name = workload if profile is not None else None
    try:
        job = Job(id=uid, kind=kind, submit_time=0.0, num_gpu=num_gpu, gpu_share=share,
                  gpu_mem_mib=int(mem or 0), gpu_models=gpu_models, priority=priority,
                  preemptible=preemptible,
                  cpu_milli=cpu_milli, memory_mib=memory_mib,
                  utilization=1.0 if util is None else util, profile=profile,
                  profile_name=profile_name)
    except ValidationError as e:
        err = e.errors()[0]
        raise _err(".".join(str(x) for x in err["loc"]) or "spec", err["msg"]) from None
    return PodJob(uid, namespace, name, str(node), phase, True, job, workload, gpus, deleting)


def _fingerprint(pod: Mapping[str, Any]) -> bytes:
    """What `pod_to_job` reads, as one string: a cache hit must mean the same answer even
    if a caller reuses a uid and resourceVersion with different content."""
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    if not isinstance(meta, dict) or not isinstance(spec, dict):
        return ""
    parts = [meta.get(k) for k in ("name", "namespace", "uid", "resourceVersion",
                                   "annotations", "labels", "ownerReferences")]
    parts += [spec.get(k) for k in ("containers", "initContainers", "priority",
                                    "priorityClassName", "nodeName")]
    try:  # orjson: a tenth of json's time, twice per pod (filter, then prioritize)
        return orjson.dumps(parts, default=str,
                            option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    except (TypeError, ValueError, RecursionError):
        return b""


class PodCache:
    """Memoises `pod_to_job` by the pod's content (`_fingerprint`): kube-scheduler sends
    the same pod to filter and then prioritize, and parsing it twice is wasted work."""

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self._items: OrderedDict[bytes, PodJob | WireError] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, pod: Mapping[str, Any], profiles: ProfileLookup | None = None,
            priority_classes: Mapping[str, int] | None = None) -> PodJob:
        key = _fingerprint(pod) if isinstance(pod, Mapping) else b""
        if key:
            with self._lock:
                hit = self._items.get(key)
                if hit is not None:
                    self._items.move_to_end(key)
            if hit is not None:
                if isinstance(hit, WireError):
                    raise hit
                return hit
        try:
            out: PodJob | WireError = pod_to_job(pod, profiles, priority_classes)
        except WireError as e:
            out = e
        if key:
            with self._lock:
                self._items[key] = out
                while len(self._items) > self.size:
                    self._items.popitem(last=False)
        if isinstance(out, WireError):
            raise out
        return out

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
