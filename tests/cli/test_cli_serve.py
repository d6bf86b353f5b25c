"""`gsched serve` says truthfully where it listens, how it is exposed and where its store is."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gsched.commands.serve import exposure_warning, is_loopback

CLUSTER = "nodes:\n  - {name: a100, count: 2, gpu_count: 8, gpu_model: A100}\n"


def serve(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    (tmp_path / "c.yaml").write_text(CLUSTER)
    return subprocess.run([sys.executable, "-m", "gsched", "serve", "--cluster", "c.yaml",
                           "--port", "0", "--duration", "0", "--log-level", "warning", *args],
                          capture_output=True, text=True, cwd=tmp_path, timeout=60)


def test_default_is_loopback_and_the_banner_names_the_store(tmp_path):
    r = serve(tmp_path)
    assert r.returncode == 0, r.stderr
    first, second = r.stderr.splitlines()[:2]
    assert "listening on http://127.0.0.1:" in first and "(no token)" in first
    assert f"store {(tmp_path / 'gsched.db').resolve()}" in second
    assert (tmp_path / "gsched.db").exists()
    assert "warning" not in r.stderr


def test_every_interface_is_printed_as_such_with_a_warning_when_unauthenticated(tmp_path):
    r = serve(tmp_path, "--host", "0.0.0.0", "--db", "state/s.db")
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert "listening on http://0.0.0.0:" in lines[0]
    assert f"store {(tmp_path / 'state' / 's.db').resolve()}" in lines[1]
    (warning,) = [ln for ln in lines if ln.startswith("warning:")]
    assert "every interface (0.0.0.0)" in warning and "--token-file" in warning


def test_a_token_on_every_route_silences_the_warning(tmp_path):
    (tmp_path / "token").write_text("s3cret\n")
    r = serve(tmp_path, "--host", "0.0.0.0", "--token-file", "token")
    assert r.returncode == 0, r.stderr
    assert "(bearer token)" in r.stderr and "warning" not in r.stderr


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("10.0.0.7", False), ("gsched.example", False)])
def test_loopback_addresses(host, loopback):
    assert is_loopback(host) is loopback


def test_exposure_warning_says_what_is_open():
    assert exposure_warning("127.0.0.1", False, False, False) is None
    assert "nothing authenticates" in exposure_warning("10.0.0.7", False, False, False)
    assert exposure_warning("10.0.0.7", True, False, False) is None
    # the manifests' setup: a token on reports, the verbs open to kube-scheduler
    assert "--open-verbs" in exposure_warning("0.0.0.0", True, True, False)
    assert exposure_warning("0.0.0.0", True, True, True) is None
    assert exposure_warning("0.0.0.0", False, False, True) is None
