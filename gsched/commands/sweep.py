"""`gsched sweep GRID.yaml`: a grid of simulations into one table, resumable."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table


def sweep_cmd(
    grid: Annotated[Path, typer.Argument(help="Grid file (YAML): traces, clusters, policies, "
                                               "headroom, noise, seeds; see docs/capacity.md.")],
    out: Annotated[Path | None, typer.Option(help="Results table (CSV). Default: the grid's "
                                                  "'out', else <grid>.results.csv.")] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="Local worker processes "
                                                           "(default: one per core).")] = None,
    ray: Annotated[str | None, typer.Option(
        "--ray", help="Run on Ray instead: 'auto', an address (ray://host:10001), or 'local' "
                      "(a single-node Ray here). Needs pip install 'gsched[ray]'.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No table, no progress.")]
    = False,
) -> None:
    """Run every cell of a grid not yet in its results table; write the table and a summary."""
    from gsched.simulator.report import fmt_duration
    from gsched.simulator.sweep import (
        append_journal,
        load_grid,
        read_done,
        summarise,
        table_path,
        write_summary,
        write_table,
    )
    from gsched.simulator.sweep_runners import import_ray, run_processes, run_ray

    spec, cells = load_grid(grid)
    table = out if out is not None else table_path(grid, spec)
    if ray is not None:
        import_ray()  # fail before any work when the extra is missing
    done = read_done(table)
    todo = [c for c in cells if c.key not in done]
    err = Console(stderr=True, soft_wrap=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=err, disable=quiet, transient=True) as prog:
        task = prog.add_task("cells", total=len(cells), completed=len(cells) - len(todo))

        def on_row(cell, row: dict) -> None:
            done[cell.key] = row
            append_journal(table, row)
            prog.update(task, advance=1,
                        description=f"{cell.policy} on {Path(cell.trace).name}")

        if ray is not None:
            run_ray(todo, on_row, ray, num_cpus=workers)
        else:
            run_processes(todo, on_row, workers or os.cpu_count() or 1)
    rows = write_table(table, cells, done)
    summary = summarise(rows)
    summary_path = table.with_name(f"{table.stem}.summary.csv")
    write_summary(summary_path, summary)
    if quiet:
        return
    console = Console(width=max(Console().width, 140))
    t = Table(title=f"{grid.name}: {len(cells)} cells ({len(todo)} run now, "
                    f"{len(cells) - len(todo)} already done); mean over seeds")
    for col in ("trace", "cluster", "policy", "headroom", "noise", "seeds", "GPUs",
                "mean util", "cost (USD)", "train queue p95", "SLO risk", "unfinished"):
        t.add_column(col, justify="left" if col in ("trace", "cluster", "policy") else "right")
    for s in summary:
        q = s["training_queue_delay_p95_s"]
        t.add_row(Path(s["trace"]).name, s["cluster"], s["policy"], f"{s['headroom']:g}",
                  f"{s['noise']:g}", str(s["seeds"]), f"{s['gpus']:,}",
                  f"{(s['mean_gpu_utilization'] or 0):.1%}", f"{(s['cost'] or 0):,.0f}",
                  "-" if q is None else fmt_duration(q),
                  f"{(s['slo_risk_slot_minutes'] or 0):.1f}", f"{s['unfinished_jobs']:.1f}")
    console.print(t)
    console.print(f"wrote {table} and {summary_path}")


def register(app: typer.Typer) -> None:
    app.command("sweep")(sweep_cmd)
