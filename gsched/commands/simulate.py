"""`gsched simulate`: score policies side by side on a trace."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from gsched.errors import InputError


def simulate_cmd(
    trace: Annotated[Path, typer.Argument(help="Trace file: native CSV, openb pod list or "
                                                "Gavel .trace.")],
    policy: Annotated[str, typer.Option(help="'all' or a comma-separated list of policies.")]
    = "all",
    cluster: Annotated[Path | None, typer.Option(
        help="Cluster description (YAML/JSON or openb node list). Default: 8-GPU nodes "
             "sized to 75% of the trace's peak concurrent request.")] = None,
    mode: Annotated[str, typer.Option(help="'replay' (event-driven over time) or "
                                           "'inflation' (the FGD paper's method).")] = "replay",
    seeds: Annotated[int, typer.Option(min=1, help="Inflation mode: seeds to average.")] = 10,
    target: Annotated[float, typer.Option(min=1.0, help="Inflation mode: stop when requests "
                                                          "reach this share of capacity.")] = 1.3,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write every figure here.")]
    = None,
    plot: Annotated[Path | None, typer.Option(help="Draw allocation/utilisation over time "
                                                   "(PNG).")] = None,
    profiles: Annotated[Path | None, typer.Option(help="Profiles file for named profiles "
                                                       "(default: <trace>.profiles.csv).")]
    = None,
    headroom: Annotated[float, typer.Option(min=0.0, max=0.9, help="Share of each GPU kept "
                                            "free of predicted load (profile-aware policies).")]
    = 0.1,
    until: Annotated[float | None, typer.Option(help="Stop the clock after this many "
                                                     "seconds.")] = None,
    checkpoint_interval: Annotated[float, typer.Option(help="Seconds between training "
                                                            "checkpoints.")] = 1800.0,
    restart_overhead: Annotated[float, typer.Option(help="Seconds a checkpoint + restart "
                                                         "costs.")] = 120.0,
    noise: Annotated[float, typer.Option(min=0.0, help="Robustness: relative per-slot noise "
                                                       "of actual inference load.")] = 0.0,
    shift_slots: Annotated[int, typer.Option(help="Robustness: actual peaks come this many "
                                                  "slots later than predicted.")] = 0,
    surge: Annotated[float, typer.Option(min=0.0, help="Robustness: extra relative load "
                                                       "during a surge window.")] = 0.0,
    surge_start_slot: Annotated[int, typer.Option(min=0)] = 0,
    surge_slots: Annotated[int, typer.Option(min=0)] = 0,
    replan_every: Annotated[float | None, typer.Option(
        help="The tidal loop: re-plan running and queued work with CP-SAT this "
                       "often (seconds); tidal follows the plan.")] = None,
    guard: Annotated[bool, typer.Option(help="The tidal loop: evict training from GPUs whose "
                                             "measured load is over the safe line.")] = False,
    report_interval: Annotated[float, typer.Option(min=0.1, help="Seconds between agent "
                                                   "reports (the guard's reaction time).")]
    = 10.0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No table, no progress.")]
    = False,
) -> None:
    """Replay a trace through every policy and print them side by side."""
    from gsched.scheduler.policies.policy import PolicyConfig
    from gsched.scheduler.policies.registry import policy_names
    from gsched.simulator.engine import SimConfig
    from gsched.simulator.guard import GuardConfig
    from gsched.simulator.load import LoadDeviation
    from gsched.simulator.report import plot_timelines, print_table, write_json
    from gsched.simulator.run import run_comparison
    from gsched.traces.cluster import load_cluster, size_cluster
    from gsched.traces.load import load_trace

    if mode not in ("replay", "inflation"):
        raise InputError(f"unknown mode {mode!r}; expected 'replay' or 'inflation'",
                         field="--mode")
    if replan_every is not None and replan_every < 60:
        raise InputError(f"must be at least 60 seconds, got {replan_every}",
                         field="--replan-every")
    names = policy_names(policy)
    tr = load_trace(trace, profiles=profiles)
    if not tr.jobs:
        raise InputError("trace has no jobs", file=str(trace))
    cl = load_cluster(cluster) if cluster else size_cluster(tr)
    if cl.total_gpus == 0:
        raise InputError("cluster has no GPUs", file=str(cluster) if cluster else None)
    sim = SimConfig(checkpoint_interval_s=checkpoint_interval,
                    restart_overhead_s=restart_overhead, until_s=until,
                    deviation=LoadDeviation(noise=noise, shift_slots=shift_slots, surge=surge,
                                            surge_start_slot=surge_start_slot,
                                            surge_slots=surge_slots),
                    guard=GuardConfig(report_interval_s=report_interval) if guard else None,
                    replan_every_s=replan_every)
    # Wide enough for the table when output is piped (rich falls back to 80 columns).
    console = Console(width=max(Console().width, 34 + 14 * len(names)))
    err = Console(stderr=True, soft_wrap=True)
    for w in tr.warnings:
        err.print(f"[yellow]warning:[/] {w}")
    units = len(tr.jobs) if mode == "replay" else seeds
    show = not quiet and units * len(names) > (20_000 if mode == "replay" else 2)
    columns = (TextColumn("{task.description}"), BarColumn(),
               TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn())
    with Progress(*columns, console=err, disable=not show, transient=True) as prog:
        tasks = {n: prog.add_task(f"{n:<11}", total=units) for n in names}

        def on_progress(name: str, done: int, total: int) -> None:
            prog.update(tasks[name], completed=done)

        result = run_comparison(tr, cl, names, mode, sim, PolicyConfig(headroom=headroom),
                                seeds=seeds, target=target, on_progress=on_progress)
    payload = result.payload()
    if not quiet:
        title = (f"{trace.name}: {len(tr.jobs):,} jobs on {len(cl.nodes):,} nodes / "
                 f"{cl.total_gpus:,} GPUs ({mode})")
        print_table(console, title, payload["policies"], mode)
        for w in payload.get("warnings", []):
            if w not in tr.warnings:
                err.print(f"[yellow]warning:[/] {w}")
    if json_out:
        write_json(json_out, payload)
        if not quiet:
            console.print(f"wrote {json_out}")
    if plot:
        curves = {k: v.curve for k, v in result.inflation.items()}
        plot_timelines(plot, f"{trace.name} ({mode})",
                       {k: v.timeline for k, v in result.replay.items()}, mode, curves)
        if not quiet:
            console.print(f"wrote {plot}")


def register(app: typer.Typer) -> None:
    app.command("simulate")(simulate_cmd)
