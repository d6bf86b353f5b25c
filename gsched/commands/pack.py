"""`gsched pack`: a tidal packing plan for a set of workloads (the CP-SAT packer)."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from gsched.errors import InputError

#: seconds between progress lines on stderr when it is not a terminal
PROGRESS_SECONDS = 5.0
#: what the limit loses before packing starts, by estimate (not by clock, so the
#: deterministic budget, and with it the plan, does not depend on machine load):
#: interpreter start and imports, and reading the trace per job
STARTUP_SECONDS = 1.0
READ_SECONDS_PER_JOB = 3e-4


def _process_age() -> float:
    """Seconds since this process started (Linux /proc), so --time-limit covers the whole
    command, interpreter start and imports included; 0 where that is not available."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


class _Heartbeat:
    """Off a terminal (CI, nohup, kubectl logs), a progress line on stderr at each stage
    and every PROGRESS_SECONDS while the packer works; nothing on a terminal."""

    def __init__(self, progress, start: float, limit: float, enabled: bool) -> None:  # noqa: ANN001
        self.progress, self.start, self.limit = progress, start, limit
        self.enabled = enabled
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._next_at = time.perf_counter() + PROGRESS_SECONDS
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _Heartbeat:
        if self.enabled:
            self.progress.on_stage = lambda _: self._print()
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.progress.on_stage = None

    def line(self) -> str:
        p = self.progress
        parts = [f"pack: {time.perf_counter() - self.start:5.1f} s of {self.limit:g}",
                 p.stage]
        gpus = p.gpus()
        if gpus is not None:
            parts.append(f"{gpus:,} GPUs")
        if p.bound is not None:
            parts.append(f"bound {p.bound:,}")
        if p.budget is not None:
            parts.append(f"{p.budget.iterations:,} steps")
        return "  ".join(parts)

    def _print(self) -> None:
        with self._lock:
            self._next_at = time.perf_counter() + PROGRESS_SECONDS
            print(self.line(), file=sys.stderr, flush=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            if time.perf_counter() >= self._next_at:
                self._print()


def _hhmm(slot: int, slots: int) -> str:
    minutes = int(slot * 1440 / slots)
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def pack_cmd(
    workloads: Annotated[Path, typer.Argument(help="Workloads as a trace (native CSV; their "
                                                    "profiles give the loads).")],
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the plan here.")]
    = None,
    cluster: Annotated[Path | None, typer.Option(
        help="Cluster description (YAML/JSON or openb node list). Default: enough 8-GPU "
             "nodes of --gpu-model for every workload alone.")] = None,
    profiles: Annotated[Path | None, typer.Option(help="Profiles file for named profiles "
                                                       "(default: <trace>.profiles.csv).")]
    = None,
    headroom: Annotated[float, typer.Option(min=0.0, max=0.9, help="Share of each GPU kept "
                                            "free of predicted load.")] = 0.1,
    time_limit: Annotated[float, typer.Option(
        min=0.5, help="Wall-clock budget of the whole command, in seconds (reading, "
                      "bounds, search and writing; see docs/packer.md).")] = 10.0,
    seed: Annotated[int, typer.Option(help="CP-SAT and neighbourhood seed.")] = 0,
    workers: Annotated[int, typer.Option(
        min=1, help="CP-SAT workers per solve. Above 1 the search runs on the wall clock "
                    "and the same seed may give a different plan.")] = 1,
    deterministic: Annotated[bool, typer.Option(
        "--deterministic/--wall-clock",
        help="Deterministic time budget (same plan for the same seed) or wall clock.")]
    = True,
    move_budget: Annotated[int | None, typer.Option(min=0, help="At most this many "
                                                    "workloads move (with a current plan).")]
    = None,
    current: Annotated[Path | None, typer.Option(help="A previous plan JSON: its "
                                                      "assignments are the current "
                                                      "placement (for --move-budget).")]
    = None,
    kind: Annotated[str, typer.Option(help="Pack 'all' GPU workloads, or only 'inference' "
                                           "or 'training'.")] = "all",
    at: Annotated[float | None, typer.Option(help="Pack only the workloads running at this "
                                                  "time (seconds; services without a "
                                                  "duration run to the end).")] = None,
    gpu_model: Annotated[str, typer.Option(help="GPU model of a sized cluster.")] = "A100",
    show: Annotated[int, typer.Option(min=0, help="Rows of the assignment table.")] = 30,
    quiet: Annotated[bool, typer.Option(
        "--quiet", "-q", help="Print nothing but errors: no plan table, no summary, no "
                              "progress lines (the --json file is still written).")] = False,
) -> None:
    """Pack workloads on GPUs by their daily load profiles; print the plan.

    The same input and seed give the same plan, byte for byte (one worker, and the run
    finished inside its wall-clock guard); --time-limit bounds the whole command."""
    start = time.perf_counter() - _process_age()
    from gsched.models import Cluster, Node
    from gsched.scheduler.packing.pack import Progress, pack_problem
    from gsched.scheduler.packing.plan import gpu_usage
    from gsched.scheduler.packing.problem import Workload, build_problem
    from gsched.traces.cluster import load_cluster
    from gsched.traces.files import atomic_write_text

    if kind not in ("all", "inference", "training"):
        raise InputError(f"unknown kind {kind!r}; expected all, inference or training",
                         field="--kind")
    tr = _load(workloads, profiles)
    jobs = [j for j in tr.jobs if j.num_gpu > 0 and kind in ("all", j.kind)
            and (at is None or (j.submit_time <= at and (j.duration is None
                                                         or j.submit_time + j.duration > at)))]
    if not jobs:
        raise InputError("no GPU workloads to pack (check --kind / --at)", file=str(workloads))
    prev: dict[str, tuple[str, tuple[int, ...]]] = {}
    if current is not None:
        try:
            data = json.loads(current.read_text())
            prev = {a["workload"]: (a["node"], tuple(a["gpus"])) for a in data["assignments"]}
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise InputError(f"not a gsched plan: {e}", file=str(current)) from None
    wl = [Workload.from_job(j, tr.slots, current=prev.get(j.id)) for j in jobs]
    if cluster is not None:
        cl = load_cluster(cluster)
    else:
        per_model = Counter((j.gpu_models[0] if j.gpu_models else gpu_model) for j in jobs
                            for _ in range(j.num_gpu))
        width = max(8, max(j.num_gpu for j in jobs))
        # named as a cluster file's `count` expands (a100-0, a100-1, ...), so a plan's
        # nodes can be fed to `gsched serve`
        cl = Cluster(nodes=[Node(name=f"{m.lower()}-{k}", gpu_count=width, gpu_model=m)
                            for m, n in sorted(per_model.items())
                            for k in range(-(-n // width) + 1)],
                     source="sized to the workloads")
    prob = build_problem(wl, cl, headroom, tr.slots)
    # the plan must be out by the limit: keep back what writing it takes
    reserve = 0.5 + 2e-4 * prob.n_items
    progress = Progress(stage="packing")
    with _Heartbeat(progress, start, time_limit, enabled=not quiet and not sys.stderr.isatty()):
        plan, assignment = pack_problem(prob, time_limit=time_limit, seed=seed,
                                        workers=workers, deterministic=deterministic,
                                        move_budget=move_budget,
                                        deadline=start + time_limit - reserve,
                                        overhead=STARTUP_SECONDS + reserve
                                        + READ_SECONDS_PER_JOB * len(tr.jobs),
                                        progress=progress)
    usage = gpu_usage(prob, assignment)
    saved = plan.peak_reservation_gpus - plan.gpus_used
    payload = {
        "gpus_used": plan.gpus_used, "lower_bound": plan.lower_bound,
        "peak_reservation_gpus": plan.peak_reservation_gpus,
        "profile_ffd_gpus": plan.profile_ffd_gpus, "solve_seconds": plan.solve_seconds,
        "slots": plan.slots,
        "assignments": [a.model_dump() for a in plan.assignments],
        "gpus_saved_vs_peak_reservation": saved,
        **plan.model_dump(exclude={"assignments", "gpus_used", "lower_bound",
                                   "peak_reservation_gpus", "profile_ffd_gpus",
                                   "solve_seconds", "slots"}),
        "trace": str(workloads), "cluster": {"nodes": len(cl.nodes), "gpus": cl.total_gpus,
                                             "source": cl.source},
        "gpu_usage": [u.model_dump() for u in usage],
    }
    if json_out:
        atomic_write_text(json_out, json.dumps(payload, indent=2) + "\n")
    if quiet:
        return
    console = Console(width=max(Console().width, 110))
    peak_of = {(u.node, u.gpu): u for u in usage}
    console.print(f"[bold]{workloads.name}[/]: {len(jobs):,} workloads -> "
                  f"{plan.gpus_used:,} GPUs (headroom {headroom:.0%})")
    t = Table()
    for col in ("workload", "node", "GPUs", "GPU peak", "peak at"):
        t.add_column(col, justify="right" if col in ("GPU peak", "peak at") else "left")
    for a in plan.assignments[:show]:
        top = max((peak_of[(a.node, g)] for g in a.gpus), key=lambda u: u.peak)
        t.add_row(a.workload, a.node, ",".join(map(str, a.gpus)), f"{top.peak:.2f}",
                  _hhmm(top.peak_slot, plan.slots))
    if len(plan.assignments) > show:
        t.caption = f"first {show} of {len(plan.assignments):,} assignments (--show N)"
    console.print(t)
    s = Table(show_header=False, box=None)
    pct = saved / plan.peak_reservation_gpus if plan.peak_reservation_gpus else 0.0
    bounds = ", ".join(f"{k} {v:,}" if v is not None else f"{k} cut"
                       for k, v in plan.bounds.items())
    rb = plan.request_booking_gpus
    wall = time.perf_counter() - start
    rows = [
        ("GPUs used", f"{plan.gpus_used:,}  (${plan.cost_per_hour:,.2f}/h)"),
        ("lower bound", f"{plan.lower_bound:,}  ({plan.binding_bound}; gap {plan.gap:.1%})"),
        ("every bound", bounds),
        *[(f"  {k} cut", why) for k, why in plan.bounds_cut.items()],
        ("peak reservation (FFD)", f"{plan.peak_reservation_gpus:,}  -> saved {saved:,} GPUs "
                                   f"({pct:.0%}, same headroom; the headline saving)"),
        ("request booking (FFD)", f"{rb:,}  -> saved {rb - plan.gpus_used:,} GPUs "
                                  f"({plan.saving['vs_request_booking']:.0%}; requests up to "
                                  f"a whole GPU, no headroom)"),
        ("profile-aware FFD", f"{plan.profile_ffd_gpus:,}"),
        ("search", f"{plan.status}, {plan.lns_iterations} steps, stopped by "
                   f"{plan.stopped_by}, seed {plan.seed}"
                   + (f", {plan.moves} moves" if prev else "")),
        ("time", f"{wall:.1f} s of {time_limit:g} s  ("
                 + ("deterministic: same seed, same plan)" if plan.solve_seconds_kind
                    == "deterministic" else "wall clock: the plan may vary run to run)")),
    ]
    for k, v in rows:
        s.add_row(f"[bold]{k}[/]", v)
    console.print(s)
    if json_out:
        console.print(f"wrote {json_out}")


def _load(path: Path, profiles: Path | None):  # noqa: ANN202 - Trace, imported lazily
    try:
        from gsched.traces.load import load_trace
    except ImportError:  # pragma: no cover - older checkouts without the format detector
        from gsched.traces.native import read_native

        return read_native(path, profiles=profiles)
    return load_trace(path, profiles=profiles)


def register(app: typer.Typer) -> None:
    app.command("pack")(pack_cmd)
