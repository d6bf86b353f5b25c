"""Usage history in SQLite: what agents measured, per workload and per GPU, over time.

Tables are prefixed `usage_` so the file can be shared with the extender's store
(`profiles*`, `assignments*`). A report is stored in one transaction together with its
id in `usage_reports`, so storing the same report twice is impossible: the second
attempt is recognised as a duplicate and changes nothing (exactly-once ingestion on top
of the agents' at-least-once delivery).

Profile learning reads it back as `{workload: (timestamps, values)}` numpy arrays, the
input of `gsched.scheduler.profiles.learn_profiles`. Values are utilisation as a share
of one whole GPU; a workload on several GPUs is averaged over them per timestamp.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import numpy as np

from gsched.agents.model import Report, Series
from gsched.scheduler.extender.sqlite import connect

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS usage_reports (report_id TEXT PRIMARY KEY, node TEXT NOT NULL,"
    " created_at REAL NOT NULL, received_at REAL NOT NULL, samples INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS usage_samples (workload TEXT NOT NULL, node TEXT NOT NULL,"
    " gpu TEXT NOT NULL, ts REAL NOT NULL, util REAL NOT NULL, mem_mib REAL)",
    "CREATE INDEX IF NOT EXISTS usage_samples_workload_ts ON usage_samples (workload, ts)",
    "CREATE TABLE IF NOT EXISTS usage_gpu_samples (node TEXT NOT NULL, gpu TEXT NOT NULL,"
    " ts REAL NOT NULL, util REAL NOT NULL, mem_mib REAL)",
    "CREATE INDEX IF NOT EXISTS usage_gpu_samples_node_ts ON usage_gpu_samples (node, ts)",
    "CREATE INDEX IF NOT EXISTS usage_reports_received ON usage_reports (received_at)",
)


class UsageHistory:
    """Thread-safe store of agent samples. `path=":memory:"` for a throwaway one."""

    def __init__(self, path: Path | str = ":memory:", durable: bool = True,
                 resolution_s: float = 0.0) -> None:
        """`resolution_s > 0` stores one row per series per `resolution_s` bucket (mean
        utilisation, peak memory) instead of every sample: 1 Hz agents on 1,000 nodes
        send ~16,000 samples/s, far more than daily profiles of 15-minute slots need."""
        if resolution_s < 0:
            raise ValueError(f"resolution must be >= 0 seconds, got {resolution_s}")
        self.resolution_s = resolution_s
        self.path = str(path)
        self._lock = threading.Lock()
        # FULL: a report acknowledged to an agent is on disk, so an agent never deletes
        # a report the scheduler could still lose.
        self._db = connect(self.path, SCHEMA, "FULL" if durable else "NORMAL")
        # Group commit state: the open batch's generation, the first generation not yet
        # committed, and generations that were rolled back.
        self._in_txn = False
        self._gen = 0
        self._committed = 0
        self._failed: set[int] = set()

    def close(self) -> None:
        with self._lock:
            if self._in_txn:
                self._db.execute("COMMIT")
                self._in_txn = False
            self._db.close()

    def store(self, report: Report, received_at: float | None = None) -> tuple[bool, int]:
        """Store a report once; returns (duplicate, samples stored) once it is durable.

        Group commit: concurrent callers (one per HTTP request thread) add their rows to
        one open transaction and the first to reach the commit makes the whole batch
        durable with one fsync, so throughput grows with concurrency instead of being
        capped at one fsync per report. Nobody returns before their batch is committed,
        duplicates included (the original may sit in the same batch).
        """
        received_at = time.time() if received_at is None else received_at
        rows = [(s.workload, report.node, s.gpu, t, u, m)
                for s in report.workloads for t, u, m in self._points(s)]
        gpu_rows = [(report.node, s.gpu, t, u, m) for s in report.gpus
                    for t, u, m in self._points(s)]
        n = len(rows) + len(gpu_rows)
        with self._lock:
            if not self._in_txn:
                self._db.execute("BEGIN IMMEDIATE")
                self._in_txn = True
            gen = self._gen
            try:
                cur = self._db.execute(
                    "INSERT OR IGNORE INTO usage_reports (report_id, node, created_at, "
                    "received_at, samples) VALUES (?, ?, ?, ?, ?)",
                    (report.report_id, report.node, report.created_at, received_at, n))
                duplicate = cur.rowcount == 0
                if not duplicate:
                    self._db.executemany("INSERT INTO usage_samples VALUES (?, ?, ?, ?, ?, ?)",
                                         rows)
                    self._db.executemany("INSERT INTO usage_gpu_samples VALUES (?, ?, ?, ?, ?)",
                                         gpu_rows)
            except BaseException:
                self._rollback_locked()
                raise
        self._commit(gen)
        return duplicate, (0 if duplicate else n)

    def _commit(self, gen: int) -> None:
        with self._lock:
            if gen in self._failed:
                raise sqlite3.OperationalError("the batch holding this report was rolled back")
            if self._committed > gen:
                return  # another caller committed our batch
            try:
                self._db.execute("COMMIT")
            except BaseException:
                self._rollback_locked()
                raise
            self._in_txn = False
            self._gen += 1
            self._committed = self._gen

    def _rollback_locked(self) -> None:
        if self._in_txn:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
        self._failed.add(self._gen)
        self._in_txn = False
        self._gen += 1
        self._committed = self._gen

    def _points(self, s: Series) -> list[tuple[float, float, float | None]]:
        mem = s.mem_mib or [None] * len(s.t)
        if self.resolution_s <= 0:
            return list(zip(s.t, s.util, mem, strict=True))
        res = self.resolution_s
        buckets: dict[float, list] = {}
        for t, u, m in zip(s.t, s.util, mem, strict=True):
            b = buckets.setdefault((t // res) * res, [0.0, 0, None])
            b[0] += u
            b[1] += 1
            if m is not None:
                b[2] = m if b[2] is None else max(b[2], m)
        return [(t, total / n, m) for t, (total, n, m) in buckets.items()]

    def has_report(self, report_id: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM usage_reports WHERE report_id = ?",
                                    (report_id,)).fetchone() is not None

    def workloads(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute(
                "SELECT DISTINCT workload FROM usage_samples ORDER BY workload")]

    def samples(self, workload: str, since: float | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
        """(timestamps, utilisation) of one workload, time-sorted, averaged over GPUs."""
        with self._lock:
            rows = self._db.execute(
                "SELECT ts, AVG(util) FROM usage_samples WHERE workload = ? AND ts >= ? "
                "GROUP BY ts ORDER BY ts", (workload, -np.inf if since is None else since)
            ).fetchall()
        arr = np.asarray(rows, dtype=np.float64).reshape(-1, 2)
        return arr[:, 0].copy(), arr[:, 1].copy()

    def all_samples(self, since: float | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Every workload's (timestamps, utilisation): the input of `learn_profiles`."""
        with self._lock:
            rows = self._db.execute(
                "SELECT workload, ts, AVG(util) FROM usage_samples WHERE ts >= ? "
                "GROUP BY workload, ts ORDER BY workload, ts",
                (-np.inf if since is None else since,)).fetchall()
        out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        if not rows:
            return out
        names = [r[0] for r in rows]
        vals = np.asarray([(r[1], r[2]) for r in rows], dtype=np.float64)
        start = 0
        for i in range(1, len(names) + 1):
            if i == len(names) or names[i] != names[start]:
                out[names[start]] = (vals[start:i, 0].copy(), vals[start:i, 1].copy())
                start = i
        return out

    def gpu_samples(self, node: str, since: float | None = None
                    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per GPU of `node`: (timestamps, utilisation)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT gpu, ts, util FROM usage_gpu_samples WHERE node = ? AND ts >= ? "
                "ORDER BY gpu, ts", (node, -np.inf if since is None else since)).fetchall()
        out: dict[str, tuple[list[float], list[float]]] = {}
        for gpu, ts, u in rows:
            t, v = out.setdefault(gpu, ([], []))
            t.append(ts)
            v.append(u)
        return {g: (np.asarray(t), np.asarray(v)) for g, (t, v) in out.items()}

    def latest_timestamp(self) -> float | None:
        with self._lock:
            (ts,) = self._db.execute("SELECT MAX(ts) FROM usage_samples").fetchone()
        return ts

    def counts(self) -> dict[str, int]:
        """Rows per table: reports, workload samples, GPU samples."""
        with self._lock:
            return {t: self._db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                    for t in ("usage_reports", "usage_samples", "usage_gpu_samples")}

    def prune(self, before_ts: float) -> int:
        """Forget samples older than `before_ts` (report ids are kept for idempotency)."""
        with self._lock:
            if not self._in_txn:
                self._db.execute("BEGIN IMMEDIATE")
                self._in_txn = True
            gen = self._gen
            n = self._db.execute("DELETE FROM usage_samples WHERE ts < ?",
                                 (before_ts,)).rowcount
            n += self._db.execute("DELETE FROM usage_gpu_samples WHERE ts < ?",
                                  (before_ts,)).rowcount
        self._commit(gen)
        return n
