"""`gsched simulate`: score policies side by side on a trace."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from gsched.errors import InputError
from gsched.progress import ProgressLog
from gsched.traces.files import check_output, output_errors

#: SimConfig field -> the flag that sets it, for error messages.
_FLAGS = {"checkpoint_interval_s": "--checkpoint-interval",
          "restart_overhead_s": "--restart-overhead", "until_s": "--until"}
#: What `--plot` can write (matplotlib picks the format by suffix).
PLOT_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")


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
    inference_reserve: Annotated[float, typer.Option(
        min=0.0, max=4.0, help="tidal: the relative surge inference sharing a GPU with "
                               "inference must survive (0: share by profile alone).")] = 0.0,
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
    surge_start_slot: Annotated[int, typer.Option(
        min=0, help="Robustness: first slot of the day the surge covers (0 is midnight; "
                    "a trace has 96 slots of 15 minutes unless it says otherwise).")] = 0,
    surge_slots: Annotated[int, typer.Option(
        min=0, help="Robustness: length of the surge window in slots (--surge needs "
                    "it).")] = 0,
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
    placements: Annotated[Path | None, typer.Option(
        help="Replay mode: write every start and stop (policy, time, event, job, node, "
             "GPUs) as CSV, e.g. to compare with what a real cluster did.")] = None,
) -> None:
    """Replay a trace through every policy and print them side by side."""
    from gsched.scheduler.policies.policy import PolicyConfig
    from gsched.scheduler.policies.registry import policy_names
    from gsched.simulator.engine import SimConfig
    from gsched.simulator.guard import GuardConfig
    from gsched.simulator.load import LoadDeviation
    from gsched.simulator.report import (
        deviation_note,
        plot_timelines,
        print_table,
        write_json,
    )
    from gsched.simulator.run import run_comparison
    from gsched.traces.cluster import load_cluster, size_cluster
    from gsched.traces.load import load_trace

    if mode not in ("replay", "inflation"):
        raise InputError(f"unknown mode {mode!r}; expected 'replay' or 'inflation'",
                         field="--mode")
    for out, flag in ((json_out, "--json"), (plot, "--plot")):
        if out is not None:
            check_output(out, flag, PLOT_SUFFIXES if flag == "--plot" else None)
    if surge and not surge_slots:
        raise InputError("a surge needs a window: pass --surge-slots N (and "
                         "--surge-start-slot)", field="--surge")
    deviation = LoadDeviation(noise=noise, shift_slots=shift_slots, surge=surge,
                              surge_start_slot=surge_start_slot, surge_slots=surge_slots)
    if mode == "inflation" and deviation.active:
        raise InputError("--noise, --shift-slots and --surge apply to replay mode only",
                         field="--mode")
    if placements is not None and mode != "replay":
        raise InputError("placements exist in replay mode only", field="--placements")
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
    try:
        sim = SimConfig(checkpoint_interval_s=checkpoint_interval,
                        restart_overhead_s=restart_overhead, until_s=until, deviation=deviation,
                        record_placements=placements is not None,
                        guard=GuardConfig(report_interval_s=report_interval)
                        if guard else None,
                        replan_every_s=replan_every)
    except ValidationError as e:
        err = e.errors()[0]
        raise InputError(err["msg"], field=_FLAGS.get(str(err["loc"][0]), None)) from None
    # Wide enough for the table when output is piped (rich falls back to 80 columns).
    console = Console(width=max(Console().width, 34 + 14 * len(names)))
    err = Console(stderr=True, soft_wrap=True)
    for w in tr.warnings:
        err.print(f"[yellow]warning:[/] {w}")
    units = len(tr.jobs) if mode == "replay" else seeds
    unit = "jobs" if mode == "replay" else "seeds"
    # A live bar on a terminal; off one (CI, nohup, kubectl logs) a line every few seconds.
    show = not quiet and err.is_terminal and \
        units * len(names) > (20_000 if mode == "replay" else 2)
    columns = (TextColumn("{task.description}"), BarColumn(),
               TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn())
    with Progress(*columns, console=err, disable=not show, transient=True) as prog, \
            ProgressLog(f"simulate ({mode})", enabled=not quiet and not err.is_terminal) as log:
        tasks = {n: prog.add_task(f"{n:<11}", total=units) for n in names}
        for n in names:
            log.update(n, 0, units, unit)

        def on_progress(name: str, done: int, total: int) -> None:
            prog.update(tasks[name], completed=done)
            log.update(name, done, total, unit)

        result = run_comparison(tr, cl, names, mode, sim,
                                PolicyConfig(headroom=headroom,
                                             inference_reserve=inference_reserve),
                                seeds=seeds, target=target, on_progress=on_progress)
    payload = result.payload()
    if not quiet:
        title = (f"{trace.name}: {len(tr.jobs):,} jobs on {len(cl.nodes):,} nodes / "
                 f"{cl.total_gpus:,} GPUs ({mode})")
        note = deviation_note(noise, shift_slots, surge, surge_start_slot, surge_slots)
        print_table(console, title, payload["policies"], mode, note)
        for w in payload.get("warnings", []):
            if w not in tr.warnings:
                err.print(f"[yellow]warning:[/] {w}")
    if json_out:
        with output_errors(json_out, "--json"):
            write_json(json_out, payload)
        if not quiet:
            console.print(f"wrote {json_out}")
    if placements is not None:
        _write_placements(placements, result.replay)
        if not quiet:
            console.print(f"wrote {placements}")
    if plot:
        curves = {k: v.curve for k, v in result.inflation.items()}
        with output_errors(plot, "--plot"):
            plot_timelines(plot, f"{trace.name} ({mode})",
                           {k: v.timeline for k, v in result.replay.items()}, mode, curves)
        if not quiet:
            console.print(f"wrote {plot}")


def _write_placements(path: Path, replay: dict) -> None:
    """CSV of every start and stop, policy by policy, in the order they happened."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["policy", "time", "event", "job", "node", "gpus"])
    for name, res in replay.items():
        for t, event, job, node, gpus in res.placements:
            w.writerow([name, repr(float(t)), event, job, node, ";".join(map(str, gpus))])
    try:
        path.write_text(buf.getvalue())
    except OSError as e:
        raise InputError(f"cannot write: {e.strerror}", file=str(path)) from None


def register(app: typer.Typer) -> None:
    app.command("simulate")(simulate_cmd)
