"""PID → pod attribution from real `/proc/<pid>/cgroup` shapes."""

from __future__ import annotations

import pytest
from kubernetes.client import (
    V1ContainerStatus,
    V1ObjectMeta,
    V1OwnerReference,
    V1Pod,
    V1PodStatus,
)

from gsched.agents.pods import CgroupRef, PodDirectory, PodInfo, parse_cgroup, pod_info_from_v1

CID = "3f4a5b6c7d8e9f0a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8"
UID = "8c2b7a7e-1f4e-4a5b-9d3c-0e6f1a2b3c4d"
UIDU = UID.replace("-", "_")

CASES = {
    "v2 systemd containerd": (
        f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UIDU}.slice/"
        f"cri-containerd-{CID}.scope\n", UID, CID, "cri-containerd"),
    "v2 systemd cri-o": (
        f"0::/kubepods.slice/kubepods-pod{UIDU}.slice/crio-{CID}.scope\n", UID, CID, "crio"),
    "v2 systemd docker": (
        f"0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UIDU}.slice/"
        f"docker-{CID}.scope\n", UID, CID, "docker"),
    "v2 cgroupfs containerd": (
        f"0::/kubepods/burstable/pod{UID}/{CID}\n", UID, CID, None),
    "v1 cgroupfs docker": (
        f"12:pids:/kubepods/besteffort/pod{UID}/{CID}\n11:memory:/kubepods/besteffort/pod{UID}/{CID}\n"
        f"1:name=systemd:/kubepods/besteffort/pod{UID}/{CID}\n", UID, CID,
        None),
    "v1 systemd containerd": (
        f"12:cpuset:/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UIDU}.slice"
        f"/cri-containerd-{CID}.scope\n"
        f"11:memory:/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UIDU}.slice"
        f"/cri-containerd-{CID}.scope\n", UID, CID, "cri-containerd"),
    "hybrid v1+v2, v2 wins": (
        f"12:memory:/user.slice\n0::/kubepods/pod{UID}/{CID}\n", UID, CID, None),
    "plain docker outside kubernetes": (
        f"0::/system.slice/docker-{CID}.scope\n", None, CID, "docker"),
}


@pytest.mark.parametrize("name", CASES)
def test_parse_cgroup_finds_pod_and_container(name: str) -> None:
    text, uid, cid, runtime = CASES[name]
    assert parse_cgroup(text) == CgroupRef(pod_uid=uid, container_id=cid, runtime=runtime)


@pytest.mark.parametrize("text", [
    "0::/user.slice/user-1000.slice/session-3.scope\n",
    "0::/\n",
    "12:memory:/system.slice/sshd.service\n",
    "",
])
def test_host_processes_have_no_container(text: str) -> None:
    assert parse_cgroup(text) is None


def test_crio_conmon_is_not_the_container() -> None:
    text = (f"0::/kubepods.slice/kubepods-pod{UIDU}.slice/crio-conmon-{CID}.scope\n")
    assert parse_cgroup(text) is None


def test_workload_key_is_stable_across_pod_restarts() -> None:
    rs = PodInfo(namespace="serving", name="llm-7d9f8b6c5-x2x9z", uid=UID,
                 labels={"pod-template-hash": "7d9f8b6c5"}, owner_kind="ReplicaSet",
                 owner_name="llm-7d9f8b6c5")
    assert rs.workload() == "serving/llm"
    sts = PodInfo(namespace="db", name="pg-0", uid=UID, owner_kind="StatefulSet",
                  owner_name="pg")
    assert sts.workload() == "db/pg"
    bare = PodInfo(namespace="default", name="notebook", uid=UID)
    assert bare.workload() == "default/notebook"
    labelled = PodInfo(namespace="ml", name="x-1", uid=UID, labels={"gsched.io/workload": "exp7"},
                       owner_kind="Job", owner_name="x")
    assert labelled.workload() == "ml/exp7"


def test_directory_refreshes_on_a_miss_at_most_once_per_interval() -> None:
    now = [0.0]
    calls = []
    pods: list[PodInfo] = []

    def list_pods() -> list[PodInfo]:
        calls.append(now[0])
        return list(pods)

    d = PodDirectory(list_pods, min_refresh_s=30, clock=lambda: now[0])
    ref = CgroupRef(pod_uid=UID, container_id=CID, runtime="cri-containerd")
    assert d.lookup(ref) is None and calls == [0.0]
    pods.append(PodInfo(namespace="ns", name="p", uid=UID, containers={CID: "c"}))
    now[0] = 10.0
    assert d.lookup(ref) is None and calls == [0.0]  # too soon to ask the API again
    now[0] = 31.0
    hit = d.lookup(ref)
    assert hit is not None and (hit.namespace, hit.pod, hit.container) == ("ns", "p", "c")
    # Only the pod UID known (container not started when listed): the pod, no container.
    other = CgroupRef(pod_uid=UID, container_id="f" * 64, runtime=None)
    assert d.lookup(other).container == ""


def test_directory_survives_the_api_failing() -> None:
    def boom() -> list[PodInfo]:
        raise ConnectionError("API server unreachable")

    d = PodDirectory(boom, min_refresh_s=0)
    assert d.lookup(CgroupRef(pod_uid=UID, container_id=CID, runtime=None)) is None


def test_pod_info_from_kubernetes_objects() -> None:
    pod = V1Pod(
        metadata=V1ObjectMeta(
            namespace="serving", name="llm-7d9f8b6c5-x2x9z", uid=UID,
            labels={"pod-template-hash": "7d9f8b6c5"},
            owner_references=[V1OwnerReference(api_version="apps/v1", kind="ReplicaSet",
                                               name="llm-7d9f8b6c5", uid="u", controller=True)]),
        status=V1PodStatus(container_statuses=[
            V1ContainerStatus(name="server", container_id=f"containerd://{CID}", image="i",
                              image_id="", ready=True, restart_count=0),
            V1ContainerStatus(name="sidecar", container_id=None, image="i", image_id="",
                              ready=False, restart_count=0)]))
    info = pod_info_from_v1(pod)
    assert info.containers == {CID: "server"}
    assert info.workload() == "serving/llm" and info.uid == UID
