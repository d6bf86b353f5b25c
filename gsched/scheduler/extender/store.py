"""The extender's SQLite store: learned profiles and GPU assignments.

It shares one database file with the usage history (`history.py`, tables `usage_*`);
these tables are `profiles` and `assignments`. WAL mode lets the history writer and
this store work side by side.

What a restart needs and the API server does not keep lives here: the learned daily
profile of every workload, and which GPUs of its node each bound pod got (also written
to the pod as the `gsched.io/gpus` annotation; the store is the only record when there
is no API server, in `gsched serve --cluster` mode).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gsched.scheduler.extender.sqlite import connect
from gsched.scheduler.packing.profiles import LearnedProfile

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS profiles (workload TEXT PRIMARY KEY, profile TEXT NOT NULL,"
    " updated_at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS assignments (uid TEXT PRIMARY KEY, namespace TEXT NOT NULL,"
    " name TEXT NOT NULL, node TEXT NOT NULL, gpus TEXT NOT NULL, share REAL NOT NULL,"
    " job TEXT, bound_at REAL NOT NULL, released_at REAL)",
    "CREATE INDEX IF NOT EXISTS assignments_active ON assignments (released_at)",
)


@dataclass(frozen=True)
class Assignment:
    uid: str
    namespace: str
    name: str
    node: str
    gpus: tuple[int, ...]
    share: float
    job: dict | None  # the Job as JSON (static mode rebuilds state from it)
    bound_at: float
    released_at: float | None = None


class Store:
    """Thread-safe; `path=":memory:"` for a throwaway store."""

    def __init__(self, path: Path | str = ":memory:") -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        # NORMAL: a crash of gsched loses nothing committed; a power cut may lose the
        # last binds' rows, whose GPUs are also on the pods (gsched.io/gpus). FULL
        # would put an fsync (milliseconds on shared disks) into every bind.
        self._db = connect(self.path, SCHEMA, "NORMAL")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- profiles --------------------------------------------------------------
    def put_profiles(self, profiles: dict[str, LearnedProfile], now: float | None = None) -> None:
        now = time.time() if now is None else now
        rows = [(w, p.model_dump_json(), now) for w, p in profiles.items()]
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO profiles (workload, profile, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT(workload) DO UPDATE SET profile=excluded.profile, "
                "updated_at=excluded.updated_at", rows)
            self._db.execute("COMMIT")

    def profiles(self) -> dict[str, LearnedProfile]:
        with self._lock:
            rows = self._db.execute("SELECT workload, profile FROM profiles").fetchall()
        return {w: LearnedProfile.model_validate_json(p) for w, p in rows}

    def profile_arrays(self) -> dict[str, np.ndarray]:
        """Learned (not fallback) profiles as arrays, for pod translation."""
        return {w: p.array() for w, p in self.profiles().items() if p.source == "learned"}

    # -- assignments -----------------------------------------------------------
    _UPSERT = ("INSERT INTO assignments (uid, namespace, name, node, gpus, share, job,"
               " bound_at, released_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL)"
               " ON CONFLICT(uid) DO UPDATE SET namespace=excluded.namespace,"
               " name=excluded.name, node=excluded.node, gpus=excluded.gpus,"
               " share=excluded.share, job=excluded.job, bound_at=excluded.bound_at,"
               " released_at=NULL")

    @staticmethod
    def _params(a: Assignment) -> tuple:
        return (a.uid, a.namespace, a.name, a.node, ",".join(map(str, a.gpus)), a.share,
                json.dumps(a.job) if a.job is not None else None, a.bound_at)

    def record(self, a: Assignment) -> None:
        with self._lock:
            self._db.execute(self._UPSERT, self._params(a))

    def record_many(self, items: list[Assignment]) -> None:
        """Several assignments in one transaction."""
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(self._UPSERT, [self._params(a) for a in items])
            self._db.execute("COMMIT")

    def release(self, uid: str, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        with self._lock:
            cur = self._db.execute("UPDATE assignments SET released_at=? WHERE uid=? AND "
                                   "released_at IS NULL", (now, uid))
        return cur.rowcount > 0

    def assignment(self, uid: str) -> Assignment | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM assignments WHERE uid=?", (uid,)).fetchone()
        return _row(row) if row else None

    def active_assignments(self) -> list[Assignment]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM assignments WHERE released_at IS NULL "
                                    "ORDER BY bound_at, uid").fetchall()
        return [_row(r) for r in rows]


def _row(r: tuple) -> Assignment:
    uid, ns, name, node, gpus, share, job, bound, released = r
    return Assignment(uid=uid, namespace=ns, name=name, node=node,
                      gpus=tuple(int(g) for g in gpus.split(",") if g),
                      share=float(share), job=json.loads(job) if job else None,
                      bound_at=float(bound), released_at=released)
