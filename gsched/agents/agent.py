"""The node agent: sample every interval, export, report.

One loop thread samples the source at a fixed rate (ticks do not drift with sampling
time), publishes each pass to the exporter and folds it into the next report; every
`report_every` passes the report goes into the on-disk queue and the sender thread is
woken. The sender (`reporter.Reporter`) and the `/metrics` server run in their own
threads, so a slow or absent scheduler never delays sampling.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from prometheus_client import start_http_server

from gsched.agents.exporter import AgentExporter
from gsched.agents.model import NodeSample
from gsched.agents.reporter import DiskQueue, ReportBuilder, Reporter
from gsched.errors import InputError

log = logging.getLogger(__name__)


class Source(Protocol):
    kind: str

    def open(self) -> None: ...
    def close(self) -> None: ...
    def sample(self) -> NodeSample: ...


@dataclass
class AgentConfig:
    node: str
    interval_s: float = 1.0
    report_every: int = 10
    port: int | None = 9400
    host: str = "0.0.0.0"
    scheduler: str | None = None
    token: str | None = None
    queue_dir: Path | None = None
    queue_max: int = 8640
    max_backoff_s: float = 30.0

    def __post_init__(self) -> None:
        if self.interval_s <= 0:
            raise InputError(f"interval must be positive, got {self.interval_s}",
                             field="--interval")
        if self.report_every < 1:
            raise InputError(f"report-every must be at least 1, got {self.report_every}",
                             field="--report-every")
        if self.scheduler and self.queue_dir is None:
            raise InputError("reporting to a scheduler needs --queue-dir", field="--queue-dir")


class Agent:
    """Wires a source to the exporter and (optionally) a reporter. `step()` is one pass."""

    def __init__(self, source: Source, config: AgentConfig,
                 exporter: AgentExporter | None = None) -> None:
        self.source = source
        self.config = config
        self.exporter = exporter or AgentExporter(config.node)
        self.builder = ReportBuilder(config.node)
        self.queue: DiskQueue | None = None
        self.reporter: Reporter | None = None
        if config.scheduler:
            assert config.queue_dir is not None
            self.queue = DiskQueue(config.queue_dir, config.queue_max, self.exporter.metrics)
            self.reporter = Reporter(config.scheduler, self.queue, token=config.token,
                                     metrics=self.exporter.metrics,
                                     max_backoff_s=config.max_backoff_s)
        self._passes = 0
        self.samples_reported = 0
        self.stop_event = threading.Event()
        self._threads: list[threading.Thread] = []
        self._http = None
        self.port: int | None = None

    def step(self) -> NodeSample | None:
        """Sample once, export, and queue a report when one is due.

        Never raises for the source misbehaving: a failed pass is logged, counted as
        `failed`, and the next tick tries again.
        """
        t0 = time.perf_counter()
        try:
            sample = self.source.sample()
        except Exception:
            log.exception("sampling pass failed")
            self.exporter.metrics.collections.labels("failed").inc()
            return None
        self.exporter.observe(sample, time.perf_counter() - t0, time.time())
        self._passes += 1
        if self.queue is not None:
            self.builder.add(sample)
            if self._passes % self.config.report_every == 0:
                self.flush_report()
        return sample

    def flush_report(self) -> None:
        """Queue what has been sampled since the last report and wake the sender."""
        if self.queue is None:
            return
        n = self.builder.pending_samples
        report = self.builder.build()
        if report is None:
            return
        try:
            self.queue.put(report)
        except (sqlite3.Error, OSError) as e:  # a full or broken disk must not stop sampling
            log.error("cannot queue report %s (%d samples): %s; dropping it",
                      report.report_id, n, e)
            self.exporter.metrics.reports_dropped.labels("queue_error").inc()
            self.exporter.metrics.samples_dropped.labels("queue_error").inc(n)
            return
        self.samples_reported += n
        if self.reporter:
            self.reporter.wake.set()

    def start_http(self) -> int | None:
        """Serve `/metrics`; returns the bound port (useful with port 0)."""
        if self.config.port is None:
            return None
        self._http, thread = start_http_server(self.config.port, self.config.host,
                                               registry=self.exporter.registry)
        self.port = self._http.server_port
        return self.port

    def start(self) -> None:
        """Open the source, serve metrics, start the sender and the sampling loop."""
        self.source.open()
        self.start_http()
        if self.reporter is not None:
            t = threading.Thread(target=self.reporter.run, args=(self.stop_event,),
                                 name="gsched-agent-sender", daemon=True)
            t.start()
            self._threads.append(t)
        t = threading.Thread(target=self._loop, name="gsched-agent-sampler", daemon=True)
        t.start()
        self._threads.append(t)

    def _loop(self) -> None:
        start = time.monotonic()
        k = 0
        while not self.stop_event.is_set():
            try:
                self.step()
            except Exception:  # never let one bad pass end the agent
                log.exception("agent step failed")
            k += 1
            next_tick = start + k * self.config.interval_s
            delay = next_tick - time.monotonic()
            if delay < 0:  # fell behind (a slow pass): skip missed ticks, don't burst
                k += int(-delay // self.config.interval_s) + 1
                delay = start + k * self.config.interval_s - time.monotonic()
            self.stop_event.wait(max(delay, 0.0))

    def stop(self, final_flush_timeout_s: float = 2.0) -> None:
        """Stop sampling, queue the partial report, try once more to send, shut down."""
        self.stop_event.set()
        if self.reporter:
            self.reporter.wake.set()
        for t in self._threads:
            t.join(timeout=10)
        self._threads.clear()
        if self.queue is not None:
            self.flush_report()
            if self.reporter:
                self.reporter.timeout_s = final_flush_timeout_s
                self.reporter.flush()
            self.queue.close()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        self.source.close()
