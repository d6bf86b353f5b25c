"""`gsched serve` end to end, as a process: static inventory, and against an API server."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest
from extender_util import extender_args, k8s_pod, post, ser
from fake_kube_api import FakeKubeAPI, node


class Serve:
    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gsched", "serve", "--host", "127.0.0.1", "--port", "0",
             "--log-level", "warning", *args], stderr=subprocess.PIPE, text=True)
        self.first = self.proc.stderr.readline()
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", self.first)
        if not m:
            self.proc.kill()
            raise AssertionError(self.first + self.proc.stderr.read())
        self.port = int(m.group(1))
        self.rest: list[str] = []
        self._t = threading.Thread(target=lambda: self.rest.extend(self.proc.stderr), daemon=True)
        self._t.start()

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=30)
        self._t.join(timeout=5)
        return code


def test_static_serve_binds_with_a_token_and_restores_after_restart(tmp_path: Path):
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text("nodes:\n  - {name: a100, count: 2, gpu_count: 8, gpu_model: A100}\n")
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    db = tmp_path / "gsched.db"
    auth = {"Authorization": "Bearer s3cret"}
    s = Serve("--cluster", str(cluster), "--db", str(db), "--token-file", str(token),
              "--policy", "binpack")
    try:
        assert "policy binpack, static inventory" in s.first
        pod = k8s_pod(name="big", uid="u-big", gpus=8)
        args = extender_args(pod, ["a100-0", "a100-1"], True)
        assert post(s.port, "/filter", args)[0] == 401
        code, res = post(s.port, "/filter", args, auth)
        assert (code, res["NodeNames"]) == (200, ["a100-0", "a100-1"])
        code, res = post(s.port, "/bind", {"PodName": "big", "PodNamespace": "default",
                                           "PodUID": "u-big", "Node": "a100-1"}, auth)
        assert (code, res) == (200, {"Error": ""})
        # agent-report ingestion is mounted beside the verbs, behind the same token
        assert post(s.port, "/v1/reports", b"{}")[0] == 401
        code, res = post(s.port, "/v1/reports", b"{}", auth)
        assert code == 400 and "field" in res
        with urllib.request.urlopen(f"http://127.0.0.1:{s.port}/metrics") as r:
            text = r.read().decode()
        assert 'gsched_binds_total{outcome="bound"} 1.0' in text
        assert "gsched_cluster_gpu_allocation_ratio 0.5" in text
    finally:
        assert s.stop() == 0
    again = Serve("--cluster", str(cluster), "--db", str(db), "--token-file", str(token),
                  "--policy", "binpack")
    try:
        assert "1 assignment restored" in again.first
        other = extender_args(k8s_pod(name="next", uid="u-next", gpus=8),
                              ["a100-0", "a100-1"], True)
        code, res = post(again.port, "/filter", other, auth)
        assert res["NodeNames"] == ["a100-0"]
        assert res["FailedNodes"] == {"a100-1": "not enough free whole GPUs"}
    finally:
        again.stop()


def test_serve_reports_bad_options_without_a_traceback(tmp_path: Path):
    for args, text in [
        (["--cluster", str(tmp_path / "none.yaml")], "none.yaml"),
        (["--cluster", "examples/cluster.yaml", "--policy", "magic"], "unknown policy"),
        (["--cluster", "examples/cluster.yaml", "--tls-cert", "x.pem"], "--tls-key"),
    ]:
        r = subprocess.run([sys.executable, "-m", "gsched", "serve", "--port", "0", *args,
                            "--db", str(tmp_path / "g.db")],
                           capture_output=True, text=True, timeout=60,
                           cwd=Path(__file__).resolve().parents[2])
        assert r.returncode == 2, r.stderr
        assert text in r.stderr and "Traceback" not in r.stderr


@pytest.fixture
def api():
    a = FakeKubeAPI().start()
    yield a
    a.stop()


def test_serve_against_an_api_server_leads_binds_and_releases_the_lease(api, tmp_path):
    api.put_node(node("gpu-1", gpus=4))
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: fake, cluster: {{server: "{api.url}"}}}}]
users: [{{name: me, user: {{token: abc}}}}]
contexts: [{{name: fake, context: {{cluster: fake, user: me}}}}]
current-context: fake
""")
    s = Serve("--kubeconfig", str(kubeconfig), "--db", str(tmp_path / "g.db"),
              "--identity", "replica-x", "--policy", "bestfit")
    try:
        assert "Kubernetes (1 GPU nodes), replica replica-x" in s.first
        assert api.wait_for(lambda: ("gsched-system", "gsched") in api.leases
                            and api.leases[("gsched-system", "gsched")]["spec"]
                            ["holderIdentity"] == "replica-x")
        p = k8s_pod(name="job", uid="u-job", gpus=2)
        api.put_pod(ser(p))
        code, res = post(s.port, "/filter", extender_args(p, ["gpu-1"], True))
        assert (code, res["NodeNames"]) == (200, ["gpu-1"])
        code, res = post(s.port, "/bind", {"PodName": "job", "PodNamespace": "default",
                                           "PodUID": "u-job", "Node": "gpu-1"})
        assert (code, res) == (200, {"Error": ""})
        assert api.bindings == [("default", "job", "gpu-1")]
        assert api.pods[("default", "job")]["metadata"]["annotations"]["gsched.io/gpus"] \
            == "0,1"
    finally:
        assert s.stop() == 0
    assert api.leases[("gsched-system", "gsched")]["spec"]["holderIdentity"] == ""
