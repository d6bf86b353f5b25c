"""Opening the scheduler's SQLite database, the same way for every table owner.

The store (profiles, assignments) and the usage history share one file; both need WAL
(readers never block the writer), a busy timeout, autocommit by default with explicit
transactions, and their schema created if missing. Only the durability level differs,
and each caller says why it picked its own.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path

BUSY_MS = 5000


def _wal(db: sqlite3.Connection) -> None:
    """Switch to WAL. The switch needs an exclusive lock and SQLite reports a busy file
    at once instead of calling the busy handler, so two processes opening one new file
    together (replicas starting at once) retry here, within the busy timeout."""
    deadline = time.monotonic() + BUSY_MS / 1000
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def connect(path: Path | str, schema: Iterable[str], synchronous: str = "NORMAL"
            ) -> sqlite3.Connection:
    """A connection usable from any thread (callers hold their own lock)."""
    path = str(path)
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute(f"PRAGMA busy_timeout={BUSY_MS}")
    if path != ":memory:":
        _wal(db)
        db.execute(f"PRAGMA synchronous={synchronous}")
    for stmt in schema:
        db.execute(stmt)
    return db
