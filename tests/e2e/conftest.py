"""Fixtures for the end-to-end tests: one real control plane per session.

Every test here is marked `e2e`. They need the kube-apiserver and kube-scheduler that
`tests/e2e/build.sh` builds (and caches), and etcd (Debian's etcd-server); `.ci/run`
provides all three. If they are missing, the tests fail: only GSCHED_E2E=0 skips them.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_cluster import HERE, NS, ControlPlane, GschedReplica, LeaderProxy, wait_for
from kubernetes import client
from kubernetes.client.rest import ApiException


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parent == HERE:
            item.add_marker(pytest.mark.e2e)


def _binaries() -> Path:
    out = subprocess.run(["bash", "-c", f'. "{HERE}/k8s-env.sh" && echo "$K8S_BIN"'],
                         capture_output=True, text=True, check=True).stdout.strip()
    return Path(out)


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    if os.environ.get("GSCHED_E2E") == "0":
        pytest.skip("GSCHED_E2E=0: end-to-end tests against a real control plane skipped")
    bins = _binaries()
    missing = [b for b in ("kube-apiserver", "kube-scheduler") if not (bins / b).is_file()]
    if missing or shutil.which("etcd") is None:
        pytest.fail(f"the e2e control plane is not installed ({', '.join(missing) or 'etcd'} "
                    f"missing; expected in {bins}): run tests/e2e/build.sh and apt-get install "
                    "etcd-server (.ci/run does both), or set GSCHED_E2E=0 to skip")
    # Not under pytest's basetemp: another pytest session on the machine may prune it.
    state = Path(tempfile.mkdtemp(prefix="gsched-e2e-"))
    cp = ControlPlane(state)
    proxy = None
    try:
        cp.start()
        cp.applied = cp.apply_manifests()
        proxy = LeaderProxy(cp)
        cp.proxy = proxy
        cp.start_kube_scheduler(proxy.url)
        yield cp
    finally:
        if proxy is not None:
            proxy.close()
        cp.stop()
        if os.environ.get("GSCHED_E2E_KEEP") == "1":
            print(f"\ne2e state and logs kept in {state}")
        else:
            shutil.rmtree(state, ignore_errors=True)


class Env:
    """One test's slice of the cluster: its namespace, nodes and gsched replicas."""

    def __init__(self, cp: ControlPlane, name: str) -> None:
        self.cp, self.ns = cp, cp.namespace(name)
        self.replicas: list[GschedReplica] = []
        self.gpu_counts: dict[str, int] = {}

    def nodes(self, spec: list[tuple[str, int]], **kw) -> list[str]:
        self.gpu_counts.update(dict(spec))
        return self.cp.add_nodes(spec, **kw)

    def replica(self, identity: str, **kw) -> GschedReplica:
        r = GschedReplica(self.cp, identity, **kw)
        self.replicas.append(r)
        self.cp.proxy.replicas[identity] = r
        return r

    def create(self, body: dict) -> dict:
        return self.cp.core.create_namespaced_pod(self.ns, body)

    def pods(self) -> list[dict]:
        return self.cp.pods(self.ns)

    def wait_bound(self, names: list[str], timeout: float = 120) -> list[dict]:
        def bound() -> list[dict] | None:
            pods = {p["metadata"]["name"]: p for p in self.pods()}
            ok = [pods[n] for n in names if n in pods and pods[n]["spec"].get("nodeName")]
            return ok if len(ok) == len(names) else None
        what = ", ".join(names) if len(names) <= 3 else f"{len(names)} pods"
        return wait_for(bound, timeout, f"{what} in {self.ns} to be bound")

    def close(self) -> None:
        for r in self.replicas:
            r.stop()
            self.cp.proxy.replicas.pop(r.identity, None)
        cp = self.cp
        cp.delete_pods(self.ns)
        cp.core.delete_namespace(self.ns)
        cp.delete_nodes()
        try:  # the next test's replicas should not wait out this one's lease
            client.CoordinationV1Api(cp.admin).delete_namespaced_lease("gsched", NS)
        except ApiException as e:
            if e.status != 404:
                raise


@pytest.fixture
def env(control_plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[Env]:
    # unique per test (a namespace is never really gone: no controller finalises it)
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:40].strip("-")
    digest = hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:8]
    name = f"e2e-{slug}-{digest}"
    e = Env(control_plane, name)
    try:
        yield e
    finally:
        e.close()
