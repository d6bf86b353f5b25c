"""Reports: building, the bounded on-disk queue, and in-order delivery over HTTP."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from gsched.agents.exporter import AgentMetrics
from gsched.agents.model import GpuReading, NodeSample, PodUsage, Report
from gsched.agents.reporter import DiskQueue, ReportBuilder, Reporter, read_token, reports_url
from gsched.errors import InputError


class _QuietServer(ThreadingHTTPServer):
    """A client hanging up mid keep-alive is routine here, not worth a traceback."""

    def handle_error(self, request, client_address) -> None:  # noqa: ANN001
        pass


def sample(t: float, util: float = 50.0) -> NodeSample:
    return NodeSample(
        timestamp=t, node="n1",
        gpus=(GpuReading(index=0, uuid="GPU-0", name="A100", util_pct=util, mem_used_mib=10.0,
                         mem_total_mib=100.0),
              GpuReading(index=1, uuid="GPU-1", lost=True)),
        pods=(PodUsage(namespace="ns", pod="p-1", workload="ns/p", gpu_index=0,
                       gpu_uuid="GPU-0", util_pct=util / 2, mem_used_mib=5.0),))


def report(builder: ReportBuilder, t0: float, n: int = 3) -> Report:
    for i in range(n):
        builder.add(sample(t0 + i))
    r = builder.build(now=t0 + n)
    assert r is not None
    return r


def test_builder_folds_samples_into_columnar_series() -> None:
    b = ReportBuilder("n1")
    assert b.build() is None
    r = report(b, 100.0)
    assert r.node == "n1" and len(r.report_id) == 32
    assert [(s.gpu, s.t, s.util) for s in r.gpus] == [("GPU-0", [100.0, 101.0, 102.0],
                                                       [0.5, 0.5, 0.5])]  # lost GPU left out
    (w,) = r.workloads
    assert (w.workload, w.gpu, w.pod, w.util, w.mem_mib) == ("ns/p", "GPU-0", "p-1",
                                                             [0.25] * 3, [5.0] * 3)
    assert r.sample_count == 6 and r.gpu_models == {"GPU-0": "A100"}
    assert b.build() is None  # the builder starts afresh after each report
    # The wire form round-trips through validation.
    assert Report.model_validate_json(r.model_dump_json(exclude_none=True)) == r


def test_queue_is_fifo_and_survives_a_restart(tmp_path: Path) -> None:
    b = ReportBuilder("n1")
    q = DiskQueue(tmp_path, max_reports=10)
    ids = [q.put(report(b, 100.0 * i)) or None for i in range(3)]
    assert ids == [None, None, None] and len(q) == 3
    first = q.peek()
    q.close()
    q = DiskQueue(tmp_path, max_reports=10)  # an agent restart
    assert len(q) == 3 and q.peek() == first
    q.remove(first.seq)
    assert q.peek().seq > first.seq and len(q) == 2


def test_queue_drops_oldest_beyond_its_bound_and_says_so(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    metrics = AgentMetrics(CollectorRegistry())
    q = DiskQueue(tmp_path, max_reports=2, metrics=metrics)
    b = ReportBuilder("n1")
    reports = [report(b, 100.0 * i) for i in range(4)]
    with caplog.at_level(logging.WARNING):
        dropped = [q.put(r) for r in reports]
    assert dropped == [[], [], [reports[0].report_id], [reports[1].report_id]]
    assert len(q) == 2
    assert reports[0].report_id in caplog.text and "6 samples" in caplog.text
    assert metrics.reports_dropped.labels("queue_full")._value.get() == 2
    assert metrics.samples_dropped.labels("queue_full")._value.get() == 12
    assert metrics.queue_reports._value.get() == 2
    assert json.loads(q.peek().body)["report_id"] == reports[2].report_id


class Scheduler:
    """A loopback HTTP endpoint answering with a scripted status, recording bodies."""

    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.received: list[tuple[str | None, dict]] = []
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = outer.statuses.pop(0) if outer.statuses else 200
                if status == 200:
                    outer.received.append((self.headers.get("Authorization"),
                                           json.loads(body)))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"ok": true}')

            def log_message(self, *a: object) -> None:
                pass

        self.server = _QuietServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scheduler():
    s = Scheduler()
    yield s
    s.close()


def test_reporter_sends_in_order_with_the_bearer_token(tmp_path: Path, scheduler) -> None:
    metrics = AgentMetrics(CollectorRegistry())
    q = DiskQueue(tmp_path, metrics=metrics)
    b = ReportBuilder("n1")
    reports = [report(b, 100.0 * i) for i in range(3)]
    for r in reports:
        q.put(r)
    rep = Reporter(scheduler.url, q, token="s3cret", metrics=metrics)
    assert rep.url.endswith("/v1/reports")
    assert rep.flush() and len(q) == 0
    assert [body["report_id"] for _, body in scheduler.received] == [r.report_id for r in reports]
    assert {auth for auth, _ in scheduler.received} == {"Bearer s3cret"}
    assert metrics.reports_sent._value.get() == 3


def test_reporter_keeps_reports_while_the_scheduler_fails(tmp_path: Path, scheduler) -> None:
    metrics = AgentMetrics(CollectorRegistry())
    q = DiskQueue(tmp_path, metrics=metrics)
    b = ReportBuilder("n1")
    r1, r2 = report(b, 0.0), report(b, 10.0)
    q.put(r1)
    q.put(r2)
    rep = Reporter(scheduler.url, q, metrics=metrics)
    scheduler.statuses = [503]
    assert not rep.flush() and len(q) == 2
    scheduler.statuses = [401]
    assert not rep.flush() and len(q) == 2  # a wrong token may be fixed: keep the report
    assert rep.flush() and len(q) == 0
    assert [body["report_id"] for _, body in scheduler.received] == [r1.report_id, r2.report_id]
    assert metrics.send_failures.labels("http_503")._value.get() == 1
    assert metrics.send_failures.labels("http_401")._value.get() == 1


def test_reporter_drops_a_report_the_scheduler_rejects(
        tmp_path: Path, scheduler, caplog: pytest.LogCaptureFixture) -> None:
    metrics = AgentMetrics(CollectorRegistry())
    q = DiskQueue(tmp_path, metrics=metrics)
    b = ReportBuilder("n1")
    bad, good = report(b, 0.0), report(b, 10.0)
    q.put(bad)
    q.put(good)
    scheduler.statuses = [400]
    with caplog.at_level(logging.ERROR):
        assert Reporter(scheduler.url, q, metrics=metrics).flush()
    assert [body["report_id"] for _, body in scheduler.received] == [good.report_id]
    assert bad.report_id in caplog.text
    assert metrics.reports_dropped.labels("rejected")._value.get() == 1


def test_reporter_with_the_scheduler_unreachable(tmp_path: Path) -> None:
    metrics = AgentMetrics(CollectorRegistry())
    q = DiskQueue(tmp_path, metrics=metrics)
    q.put(report(ReportBuilder("n1"), 0.0))
    s = Scheduler()
    url = s.url
    s.close()  # nothing listens there any more
    assert not Reporter(url, q, metrics=metrics, timeout_s=2).flush()
    assert len(q) == 1 and metrics.send_failures.labels("unreachable")._value.get() == 1


def test_bad_urls_and_token_files(tmp_path: Path) -> None:
    assert reports_url("http://h:1/") == "http://h:1/v1/reports"
    assert reports_url("http://h:1/v1/reports") == "http://h:1/v1/reports"
    with pytest.raises(InputError, match="--scheduler"):
        reports_url("h:1")
    (tmp_path / "tok").write_text("  abc\n")
    assert read_token(tmp_path / "tok") == "abc"
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(InputError, match="empty"):
        read_token(tmp_path / "empty")
    with pytest.raises(InputError, match="cannot read"):
        read_token(tmp_path / "missing")
