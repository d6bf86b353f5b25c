"""Opening the scheduler's SQLite database, the same way for every table owner.

The store (profiles, assignments) and the usage history share one file; both need WAL
(readers never block the writer), a busy timeout, autocommit by default with explicit
transactions, and their schema created if missing. Only the durability level differs,
and each caller says why it picked its own.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path


def connect(path: Path | str, schema: Iterable[str], synchronous: str = "NORMAL"
            ) -> sqlite3.Connection:
    """A connection usable from any thread (callers hold their own lock)."""
    path = str(path)
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    if path != ":memory:":
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={synchronous}")
    db.execute("PRAGMA busy_timeout=5000")
    for stmt in schema:
        db.execute(stmt)
    return db
