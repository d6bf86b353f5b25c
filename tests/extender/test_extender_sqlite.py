"""Opening the scheduler's SQLite file from several processes at once (replicas, or a
restart overlapping the old process): every one gets a WAL connection, none fails."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

from gsched.scheduler.extender.sqlite import connect


def _open(path: str, out: mp.Queue) -> None:
    try:
        db = connect(path, ["CREATE TABLE IF NOT EXISTS t (x)"])
        out.put(db.execute("PRAGMA journal_mode").fetchone()[0])
        db.close()
    except Exception as e:  # reported to the test, which names it
        out.put(repr(e))


def test_processes_opening_one_new_file_together_all_succeed(tmp_path: Path) -> None:
    ctx = mp.get_context("fork")
    answers = []
    for k in range(15):  # a new file each round: the switch to WAL is what races
        out = ctx.Queue()
        procs = [ctx.Process(target=_open, args=(str(tmp_path / f"g{k}.db"), out))
                 for _ in range(4)]
        for p in procs:
            p.start()
        answers += [out.get(timeout=30) for _ in procs]
        for p in procs:
            p.join()
    assert set(answers) == {"wal"}, [a for a in answers if a != "wal"]
