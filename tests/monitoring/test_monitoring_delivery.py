"""Agent → scheduler over loopback HTTP: a scheduler restart loses and duplicates nothing."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Mapping
from pathlib import Path

import pytest
from monitoring_support import free_port, scheduler_server, wait_for

from gsched.agents.agent import Agent, AgentConfig
from gsched.agents.model import NodeSample
from gsched.agents.replay import ReplaySource
from gsched.scheduler.extender.history import UsageHistory
from gsched.scheduler.extender.ingest import REPORTS_ROUTE, IngestService
from gsched.scheduler.extender.metrics import SchedulerMetrics
from gsched.scheduler.extender.server import ExtenderServer


class Recording:
    """Wraps a source and remembers every sample it produced (the ground truth)."""

    def __init__(self, inner: ReplaySource) -> None:
        self.inner = inner
        self.kind = inner.kind
        self.samples: list[NodeSample] = []
        self.lock = threading.Lock()

    def open(self) -> None:
        self.inner.open()

    def close(self) -> None:
        self.inner.close()

    def sample(self) -> NodeSample:
        s = self.inner.sample()
        with self.lock:
            self.samples.append(s)
        return s


class Scheduler:
    """Ingestion over HTTP on a fixed port, restartable on the same SQLite file."""

    def __init__(self, db: Path, port: int, token: str) -> None:
        self.db, self.port, self.token = db, port, token
        self.endpoint: ExtenderServer | None = None
        self.history: UsageHistory | None = None
        self.requests = 0
        self.duplicates = 0
        self.fail_after_store: set[int] = set()

    def start(self) -> None:
        self.history = UsageHistory(self.db)
        metrics = SchedulerMetrics()
        self.service = IngestService(self.history, metrics, self.token)

        def route(body: bytes, headers: Mapping[str, str]) -> tuple[int, dict]:
            self.requests += 1
            status, ans = self.service.handle(body, headers)
            self.duplicates += bool(ans.get("duplicate"))
            if self.requests in self.fail_after_store:
                # Stored, but the answer never reaches the agent (a proxy timeout, a
                # crash between commit and reply): the agent must re-send, and the
                # scheduler must not store it twice.
                return 503, {"error": "lost answer"}
            return status, ans

        self.endpoint = scheduler_server({REPORTS_ROUTE: route}, metrics, port=self.port,
                                         nodes=("node-a",))

    def stop(self) -> None:
        assert self.endpoint is not None and self.history is not None
        self.endpoint.stop()
        self.history.close()
        self.endpoint = self.history = None


def stored_rows(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as c:
        return c.execute("SELECT workload, gpu, ts, util FROM usage_samples").fetchall()


def stored_gpu_rows(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as c:
        return c.execute("SELECT gpu, ts, util FROM usage_gpu_samples").fetchall()


def test_every_sample_arrives_exactly_once_across_a_scheduler_restart(
        tmp_path: Path, traces_dir: Path) -> None:
    db = tmp_path / "gsched.sqlite"
    sched = Scheduler(db, free_port(), token="t0ken")
    sched.fail_after_store = {2}
    sched.start()
    src = Recording(ReplaySource(traces_dir / "alibaba-genai" / "pod_gpu_duty_cycle_anon.tar.gz",
                                 "node-a", gpus=4, pods_per_gpu=2, speed=600.0))
    agent = Agent(src, AgentConfig(node="node-a", interval_s=0.01, report_every=5, port=None,
                                   scheduler=sched.endpoint.url, token="t0ken",
                                   queue_dir=tmp_path / "queue", max_backoff_s=0.1))
    agent.start()
    try:
        wait_for(lambda: len(stored_rows(db)) > 0 and sched.requests >= 3,
                 "the first reports to arrive")
        sched.stop()
        n_down = agent.exporter.metrics.send_failures.labels("unreachable")
        wait_for(lambda: n_down._value.get() >= 2 and len(agent.queue) >= 3,
                 "reports to queue up while the scheduler is down")
        sched.start()
        wait_for(lambda: len(agent.queue) == 0 and agent.exporter.metrics.queue_reports
                 ._value.get() == 0, "the backlog to drain after the restart")
    finally:
        agent.stop()
        if sched.endpoint is not None:
            sched.stop()
    # Ground truth: every pod and GPU sample the source produced.
    want_pods = sorted((p.workload, p.gpu_uuid, s.timestamp, round(p.util_pct / 100, 12))
                       for s in src.samples for p in s.pods)
    want_gpus = sorted((g.uuid, s.timestamp, round(g.util_pct / 100, 12))
                       for s in src.samples for g in s.gpus)
    got_pods = sorted((w, g, t, round(u, 12)) for w, g, t, u in stored_rows(db))
    got_gpus = sorted((g, t, round(u, 12)) for g, t, u in stored_gpu_rows(db))
    assert len(src.samples) >= 20
    assert got_pods == want_pods
    assert got_gpus == want_gpus
    assert agent.samples_reported == len(want_pods) + len(want_gpus)
    m = agent.exporter.metrics
    assert m.reports_dropped.labels("queue_full")._value.get() == 0
    with sqlite3.connect(db) as c:
        (reports,) = c.execute("SELECT COUNT(*) FROM usage_reports").fetchone()
    # Each report acknowledged once; the one whose answer was lost came back as a duplicate.
    assert reports == m.reports_sent._value.get() and sched.duplicates >= 1


@pytest.mark.parametrize("bound", [2])
def test_beyond_the_bound_the_oldest_reports_are_dropped_and_counted(
        tmp_path: Path, traces_dir: Path, bound: int) -> None:
    port = free_port()  # nothing ever listens here
    src = ReplaySource(traces_dir / "alibaba-genai" / "pod_gpu_duty_cycle_anon.tar.gz",
                       "node-b", gpus=2, speed=60.0)
    agent = Agent(src, AgentConfig(node="node-b", interval_s=1.0, report_every=2, port=None,
                                   scheduler=f"http://127.0.0.1:{port}",
                                   queue_dir=tmp_path / "q", queue_max=bound))
    src.open()
    for _ in range(10):
        agent.step()  # 5 reports into a queue of 2
    m = agent.exporter.metrics
    assert len(agent.queue) == bound
    assert m.reports_dropped.labels("queue_full")._value.get() == 3
    assert m.samples_dropped.labels("queue_full")._value.get() == 3 * 2 * (2 + 2)
    assert not agent.reporter.flush()
    agent.queue.close()


def test_a_broken_queue_costs_reports_not_the_agent(tmp_path: Path, traces_dir: Path) -> None:
    src = ReplaySource(traces_dir / "alibaba-genai" / "pod_gpu_duty_cycle_anon.tar.gz",
                       "node-c", gpus=2, speed=60.0)
    agent = Agent(src, AgentConfig(node="node-c", interval_s=1.0, report_every=2, port=None,
                                   scheduler=f"http://127.0.0.1:{free_port()}",
                                   queue_dir=tmp_path / "q"))
    src.open()
    agent.queue.close()  # the queue's database is gone (a failed disk)
    for _ in range(4):
        assert agent.step() is not None
    m = agent.exporter.metrics
    assert m.reports_dropped.labels("queue_error")._value.get() == 2
    assert m.samples_dropped.labels("queue_error")._value.get() == 2 * 2 * (2 + 2)
    assert m.collections.labels("ok")._value.get() == 4
