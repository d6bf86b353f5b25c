"""Where a sweep's cells run: in this process, in local worker processes, or on Ray.

Every runner takes the cells still to do and a callback, runs `sweep.run_cell` on each
and calls back with each row as soon as it is known (in completion order; the table is
put in grid order afterwards). The row of a cell does not depend on where it ran.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

from gsched.errors import UnavailableError
from gsched.simulator.sweep import Cell, run_cell

OnRow = Callable[[Cell, dict], None]
RAY_EXTRA = "pip install 'gsched[ray]'"


def run_inline(cells: list[Cell], on_row: OnRow) -> None:
    for cell in cells:
        on_row(cell, run_cell(cell))


def run_processes(cells: list[Cell], on_row: OnRow, workers: int) -> None:
    """A pool of `workers` fresh processes (spawned: no state forked from the caller)."""
    if workers <= 1 or len(cells) <= 1:
        run_inline(cells, on_row)
        return
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(cells)), mp_context=ctx) as pool:
        pending = {pool.submit(run_cell, c): c for c in cells}
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                on_row(pending.pop(fut), fut.result())


def import_ray():
    """Ray, or a clear error naming the extra that installs it."""
    try:
        import ray
    except ImportError:
        raise UnavailableError(f"--ray needs Ray, which is not installed: {RAY_EXTRA}") \
            from None
    return ray


def run_ray(cells: list[Cell], on_row: OnRow, address: str,
            num_cpus: int | None = None) -> None:
    """On a Ray cluster: `auto` (the one this machine belongs to), `ray://host:port`,
    `host:port`, or `local` (start a single-node Ray here, `num_cpus` workers)."""
    ray = import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        kwargs: dict = {"include_dashboard": False, "log_to_driver": False,
                        "configure_logging": False}
        if address == "local":
            kwargs["num_cpus"] = num_cpus
        else:
            kwargs["address"] = address
        try:
            ray.init(**kwargs)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise UnavailableError(f"cannot reach Ray at {address!r}: {e}") from None
    try:
        remote = ray.remote(run_cell)
        pending = {remote.remote(c): c for c in cells}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                on_row(pending.pop(ref), ray.get(ref))
    finally:
        if started_here:
            ray.shutdown()
