"""`gsched capacity`: how many GPUs a trace needs under each policy, and what they cost."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from gsched.errors import InputError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str, flag: str) -> float:
    """`2h`, `90m`, `45s`, `1.5d` or plain seconds -> seconds."""
    m = _DURATION.match(text)
    if not m:
        raise InputError(f"expected a duration like 2h, 90m, 30s or 3600, got {text!r}",
                         field=flag)
    return float(m.group(1)) * _UNIT[m.group(2)]


def capacity_cmd(
    trace: Annotated[Path, typer.Argument(help="Trace file: native CSV, openb pod list or "
                                                "Gavel .trace.")],
    policy: Annotated[str, typer.Option(help="'all' or a comma-separated list of policies "
                                             "(k8s-spread and peak are always added: the "
                                             "savings are measured against them).")]
    = "all",
    slo_risk: Annotated[float, typer.Option(min=0.0, help="Most inference SLO risk allowed, "
                                                          "GPU slot-minutes.")] = 0.0,
    queue_p95: Annotated[str, typer.Option(help="Longest training queue delay p95 allowed "
                                                "(2h, 90m, 3600).")] = "2h",
    node_type: Annotated[str | None, typer.Option(
        help="Node shape the cluster grows by, GPUSxMODEL (e.g. 8xH100). Default: 8 GPUs "
             "of the model the trace's jobs ask for (A100 when none does).")] = None,
    price: Annotated[float | None, typer.Option(min=0.0, help="USD per GPU-hour (default: "
                                                              "the model's list price).")]
    = None,
    headroom: Annotated[float, typer.Option(min=0.0, max=0.9, help="Share of each GPU kept "
                                            "free of predicted load (profile-aware policies).")]
    = 0.1,
    profiles: Annotated[Path | None, typer.Option(help="Profiles file for named profiles "
                                                       "(default: <trace>.profiles.csv).")]
    = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the plan here.")]
    = None,
    plot: Annotated[Path | None, typer.Option(help="Draw cost against cluster size per "
                                                   "policy (PNG).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No table, no progress.")]
    = False,
) -> None:
    """The smallest cluster on which the trace meets its targets, per policy."""
    from gsched.scheduler.policies.policy import PolicyConfig
    from gsched.scheduler.policies.registry import policy_names
    from gsched.simulator.capacity import (
        REFERENCES,
        Probe,
        Targets,
        parse_node_type,
        plan_capacity,
        trace_node_shape,
    )
    from gsched.simulator.capacity_report import capacity_table, plot_capacity
    from gsched.simulator.colocation import default_model
    from gsched.simulator.report import write_json
    from gsched.traces.load import load_trace

    names = policy_names(policy)
    names += [r for r in REFERENCES if r not in names]
    targets = Targets(slo_risk=slo_risk, queue_p95_s=parse_duration(queue_p95, "--queue-p95"))
    tr = load_trace(trace, profiles=profiles)
    if not tr.jobs:
        raise InputError("trace has no jobs", file=str(trace))
    shape = parse_node_type(node_type) if node_type else trace_node_shape(tr)
    prices = {shape.model: price} if price is not None else None
    console = Console(width=max(Console().width, 130))
    err = Console(stderr=True, soft_wrap=True)
    for w in tr.warnings:
        err.print(f"[yellow]warning:[/] {w}")
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=err, disable=quiet, transient=True) as prog:
        task = prog.add_task("searching", total=None)

        def on_probe(name: str, p: Probe) -> None:
            verdict = "meets targets" if p.met else "; ".join(p.misses)
            prog.update(task, description=f"{name:<11} {p.nodes:>5} nodes: {verdict}")

        plan = plan_capacity(tr, names, targets, shape, policy_config=PolicyConfig(
            headroom=headroom), prices=prices, colocation=default_model(), on_probe=on_probe)
    plan.trace = str(trace)
    if not quiet:
        q = targets.queue_p95_s
        console.print(f"{trace.name}: {len(tr.jobs):,} jobs; smallest cluster of "
                      f"{shape.label} nodes with SLO risk <= {targets.slo_risk:g} GPU "
                      f"slot-minutes, training queue p95 <= {q / 3600:g} h, every job "
                      "finished", soft_wrap=True, highlight=False)
        console.print(capacity_table(plan))
        for name, p in plan.plans.items():
            if p.nodes is None:
                worst = p.search.probes[max(p.search.probes)]
                err.print(f"[yellow]warning:[/] {name}: no size up to {worst.nodes:,} nodes "
                          f"meets the targets ({'; '.join(worst.misses)})")
    if json_out:
        write_json(json_out, plan.payload())
        if not quiet:
            console.print(f"wrote {json_out}")
    if plot:
        plot_capacity(plot, plan, f"{trace.name}: smallest cluster per policy "
                                  f"({shape.label} nodes)")
        if not quiet:
            console.print(f"wrote {plot}")


def register(app: typer.Typer) -> None:
    app.command("capacity")(capacity_cmd)
