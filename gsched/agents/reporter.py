"""Reports to the scheduler: build, queue on disk, send in order, never lose silently.

- `ReportBuilder` folds `NodeSample`s into one compact `Report` (columnar series per GPU
  and per workload on each GPU) with a fresh `report_id`.
- `DiskQueue` keeps reports in SQLite (WAL, synchronous=FULL: a report the agent queued
  survives the agent being killed). It is bounded: beyond `max_reports` the oldest are
  dropped, and each drop is logged with what it held and counted in
  `gsched_agent_reports_dropped_total` / `gsched_agent_samples_dropped_total`.
- `Reporter` sends the oldest report first, over HTTP with a bearer token, and deletes it
  only once the scheduler answers 200 (a re-sent report is acknowledged as a duplicate,
  so delivery is exactly-once end to end). Unreachable, 5xx, 401/403 or 404: keep it and
  back off. 400/413/422: the scheduler will never take it — drop it, say so, move on.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gsched.agents.exporter import AgentMetrics
from gsched.agents.model import NodeSample, Report, Series
from gsched.errors import InputError

log = logging.getLogger(__name__)

REPORTS_PATH = "/v1/reports"


class ReportBuilder:
    """Accumulates samples between reports."""

    def __init__(self, node: str) -> None:
        self.node = node
        self._gpus: dict[str, dict] = {}
        self._workloads: dict[tuple[str, str], dict] = {}
        self._models: dict[str, str] = {}
        self.pending_samples = 0

    def add(self, sample: NodeSample) -> None:
        t = float(sample.timestamp)
        for g in sample.gpus:
            if g.lost or g.util_pct is None:
                continue
            s = self._gpus.setdefault(g.uuid, {"index": g.index, "t": [], "util": [],
                                               "mem": []})
            s["t"].append(t)
            s["util"].append(min(max(g.util_pct / 100.0, 0.0), 1.0))
            s["mem"].append(g.mem_used_mib)
            if g.name:
                self._models[g.uuid] = g.name
            self.pending_samples += 1
        for u in sample.pods:
            s = self._workloads.setdefault(
                (u.workload, u.gpu_uuid),
                {"index": u.gpu_index, "namespace": u.namespace, "pod": u.pod, "t": [],
                 "util": [], "mem": []})
            s["t"].append(t)
            s["util"].append(min(max(u.util_pct / 100.0, 0.0), 1.0))
            s["mem"].append(u.mem_used_mib)
            s["pod"] = u.pod
            self.pending_samples += 1

    def build(self, now: float | None = None) -> Report | None:
        """The report of everything added since the last build, or None if nothing was."""
        if not self._gpus and not self._workloads:
            return None

        def mem(v: list) -> list | None:
            return None if all(x is None for x in v) else v

        gpus = [Series(gpu=u, index=s["index"], t=s["t"], util=s["util"], mem_mib=mem(s["mem"]))
                for u, s in self._gpus.items()]
        wls = [Series(gpu=g, index=s["index"], workload=w, namespace=s["namespace"],
                      pod=s["pod"], t=s["t"], util=s["util"], mem_mib=mem(s["mem"]))
               for (w, g), s in self._workloads.items()]
        report = Report(report_id=uuid.uuid4().hex, node=self.node,
                        created_at=now if now is not None else time.time(), gpus=gpus,
                        workloads=wls, gpu_models=dict(self._models))
        self._gpus, self._workloads = {}, {}
        self.pending_samples = 0
        return report


@dataclass(frozen=True)
class QueuedReport:
    seq: int
    report_id: str
    body: bytes
    samples: int


class DiskQueue:
    """A bounded, crash-safe FIFO of serialised reports in `<directory>/reports.sqlite`."""

    def __init__(self, directory: Path | str, max_reports: int = 8640,
                 metrics: AgentMetrics | None = None) -> None:
        if max_reports < 1:
            raise InputError(f"the queue must hold at least one report, got {max_reports}",
                             field="--queue-max")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_reports = max_reports
        self.metrics = metrics
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.directory / "reports.sqlite", check_same_thread=False,
                                   isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS queue (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
            "report_id TEXT NOT NULL, body BLOB NOT NULL, samples INTEGER NOT NULL, "
            "created_at REAL NOT NULL)")
        self._update_gauges()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def put(self, report: Report) -> list[str]:
        """Queue a report; returns the ids of reports dropped to stay within the bound."""
        body = report.model_dump_json(exclude_none=True).encode()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("INSERT INTO queue (report_id, body, samples, created_at) "
                             "VALUES (?, ?, ?, ?)",
                             (report.report_id, body, report.sample_count, report.created_at))
            (n,) = self._db.execute("SELECT COUNT(*) FROM queue").fetchone()
            dropped = []
            if n > self.max_reports:
                dropped = self._db.execute(
                    "SELECT seq, report_id, samples, created_at FROM queue ORDER BY seq "
                    "LIMIT ?", (n - self.max_reports,)).fetchall()
                self._db.execute("DELETE FROM queue WHERE seq <= ?", (dropped[-1][0],))
            self._db.execute("COMMIT")
        for _, rid, samples, created in dropped:
            log.warning("report queue full (%d reports): dropped the oldest report %s "
                        "(%d samples, made at %s)", self.max_reports, rid, samples,
                        time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(created)))
            self._count_drop("queue_full", samples)
        self._update_gauges()
        return [rid for _, rid, _, _ in dropped]

    def peek(self) -> QueuedReport | None:
        with self._lock:
            row = self._db.execute("SELECT seq, report_id, body, samples FROM queue "
                                   "ORDER BY seq LIMIT 1").fetchone()
        return QueuedReport(*row) if row else None

    def remove(self, seq: int, dropped_reason: str | None = None) -> None:
        """Delete a report: sent, or (with a reason) discarded."""
        with self._lock:
            row = self._db.execute("SELECT samples FROM queue WHERE seq = ?",
                                   (seq,)).fetchone()
            self._db.execute("DELETE FROM queue WHERE seq = ?", (seq,))
        if dropped_reason and row:
            self._count_drop(dropped_reason, row[0])
        self._update_gauges()

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM queue").fetchone()[0]

    def queued_samples(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COALESCE(SUM(samples), 0) FROM queue").fetchone()[0]

    def _count_drop(self, reason: str, samples: int) -> None:
        if self.metrics:
            self.metrics.reports_dropped.labels(reason).inc()
            self.metrics.samples_dropped.labels(reason).inc(samples)

    def _update_gauges(self) -> None:
        if self.metrics:
            self.metrics.queue_reports.set(len(self))
            self.metrics.queue_samples.set(self.queued_samples())


def reports_url(scheduler: str) -> str:
    """The ingestion URL for a scheduler base URL (`http://host:port` → `.../v1/reports`)."""
    if not scheduler.startswith(("http://", "https://")):
        raise InputError(f"scheduler URL must start with http:// or https://, got {scheduler!r}",
                         field="--scheduler")
    base = scheduler.rstrip("/")
    return base if base.endswith(REPORTS_PATH) else base + REPORTS_PATH


class Reporter:
    """Sends queued reports in order; `flush()` once, or `run()` in a thread."""

    def __init__(self, url: str, queue: DiskQueue, token: str | None = None,
                 metrics: AgentMetrics | None = None, timeout_s: float = 5.0,
                 min_backoff_s: float = 0.5, max_backoff_s: float = 30.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.url = reports_url(url)
        self.queue = queue
        self.token = token
        self.metrics = metrics
        self.timeout_s = timeout_s
        self.min_backoff_s = min_backoff_s
        self.max_backoff_s = max_backoff_s
        self.clock = clock
        self.wake = threading.Event()
        self._backoff = 0.0
        self._last_failure: str | None = None

    def _post(self, body: bytes) -> tuple[int, bytes]:
        req = urllib.request.Request(self.url, data=body, method="POST")
        req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read() or b""

    def _fail(self, reason: str, detail: str) -> None:
        if self.metrics:
            self.metrics.send_failures.labels(reason).inc()
        if detail != self._last_failure:
            log.warning("cannot deliver reports to %s (%s); keeping them queued (%d)",
                        self.url, detail, len(self.queue))
            self._last_failure = detail

    def flush(self) -> bool:
        """Send queued reports oldest first; True if the queue was emptied."""
        while True:
            item = self.queue.peek()
            if item is None:
                return True
            try:
                status, body = self._post(item.body)
            except (urllib.error.URLError, OSError, TimeoutError) as e:
                reason = getattr(e, "reason", e)
                self._fail("unreachable", f"unreachable: {reason}")
                return False
            if status == 200:
                self.queue.remove(item.seq)
                if self.metrics:
                    self.metrics.reports_sent.inc()
                    self.metrics.last_sent.set(self.clock())
                if self._last_failure:
                    log.info("scheduler at %s is back; delivering queued reports", self.url)
                    self._last_failure = None
                continue
            if status in (400, 413, 422):
                log.error("scheduler rejected report %s (%d samples) with %d: %s; dropping it",
                          item.report_id, item.samples, status, body[:300].decode(errors="replace"))
                self.queue.remove(item.seq, dropped_reason="rejected")
                continue
            self._fail(f"http_{status}", f"HTTP {status}: {body[:200].decode(errors='replace')}")
            return False

    def run(self, stop: threading.Event) -> None:
        """Flush whenever woken or on backoff expiry, until `stop` is set."""
        while not stop.is_set():
            try:
                ok = self.flush()
            except Exception:  # e.g. the queue's disk failing: retry later, never die
                log.exception("sending reports failed")
                ok = False
            if ok:
                self._backoff = 0.0
                self.wake.wait(timeout=1.0)
            else:
                self._backoff = min(max(self._backoff * 2, self.min_backoff_s),
                                    self.max_backoff_s)
                self.wake.wait(timeout=self._backoff)
            self.wake.clear()


def read_token(path: Path | str | None) -> str | None:
    """The bearer token in `path` (surrounding whitespace stripped), or None."""
    if path is None:
        return None
    p = Path(path)
    try:
        token = p.read_text().strip()
    except OSError as e:
        raise InputError(f"cannot read token file: {e.strerror}", file=str(p)) from None
    if not token:
        raise InputError("token file is empty", file=str(p))
    return token

