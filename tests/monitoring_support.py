"""Loopback infrastructure for the monitoring tests: the scheduler's HTTP server with
routes mounted, and a real Prometheus server."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path

from gsched.models import Cluster, Node
from gsched.scheduler.extender.metrics import SchedulerMetrics
from gsched.scheduler.extender.server import ExtenderServer, ServerConfig
from gsched.scheduler.extender.verbs import Extender
from gsched.scheduler.policies.registry import make_policy

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"

Route = Callable[[bytes, Mapping[str, str]], tuple[int, dict | bytes]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scheduler_server(routes: dict[tuple[str, str], Route], metrics: SchedulerMetrics,
                     port: int = 0, nodes: tuple[str, ...] = ("replay-node-1",)
                     ) -> ExtenderServer:
    """The scheduler's real HTTP server (the extender over `nodes` of 8 GPUs) with
    `routes` mounted, listening on loopback."""
    cluster = Cluster(nodes=[Node(name=n, gpu_count=8, gpu_model="A100") for n in nodes])
    extender = Extender(cluster, make_policy("tidal"), metrics=metrics)
    return ExtenderServer(extender, metrics, ServerConfig(host="127.0.0.1", port=port),
                          extra_routes=routes).start()


def wait_for(cond: Callable[[], object], what: str, timeout_s: float = 30.0,
             step_s: float = 0.05) -> object:
    """Poll until `cond()` is truthy; fail naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(step_s)


class Prometheus:
    """A real Prometheus server on loopback scraping `targets` every `interval`."""

    def __init__(self, workdir: Path, targets: dict[str, list[str]], interval: str = "1s",
                 rule_files: list[Path] | None = None) -> None:
        self.workdir = workdir
        self.port = free_port()
        cfg = ["global:", f"  scrape_interval: {interval}", f"  evaluation_interval: {interval}"]
        if rule_files:
            cfg.append("rule_files:")
            cfg += [f"  - {p}" for p in rule_files]
        cfg.append("scrape_configs:")
        for job, addrs in targets.items():
            listed = ", ".join(repr(a) for a in addrs)
            cfg += [f"  - job_name: {job}", f"    scrape_interval: {interval}",
                    "    static_configs:", f"      - targets: [{listed}]"]
        (workdir / "prometheus.yml").write_text("\n".join(cfg) + "\n")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Prometheus:
        self.log = open(self.workdir / "prometheus.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={self.workdir / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(self._ready, "Prometheus to become ready")
        return self

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError("prometheus exited: " +
                                 (self.workdir / "prometheus.log").read_text()[-2000:])
        try:
            with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def api(self, path: str, **params: str) -> dict:
        q = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{q}", timeout=10) as r:
            return json.loads(r.read())

    def query(self, promql: str) -> list[dict]:
        ans = self.api("query", query=promql)
        assert ans["status"] == "success", ans
        return ans["data"]["result"]

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
            self.log.close()
