"""`gsched profiles learn --prometheus URL`: daily profiles from an existing Prometheus.

Reads dcgm-exporter's `DCGM_FI_DEV_GPU_UTIL` per pod (`gsched/traces/prometheus.py`),
groups pods into workloads, learns each workload's profile the way agent reports are
learned (`packing/profiles.learn_profiles`: a decayed high quantile per slot), and
stores them in the SQLite store `gsched serve --db` reads: pods of those workloads are
then placed by their learned profile from the first one on.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from gsched.errors import InputError

profiles_app = typer.Typer(help="Learn daily load profiles.")


@profiles_app.command("learn")
def learn_cmd(
    prometheus: Annotated[str, typer.Option(
        help="Prometheus base URL (http://host:9090) that scrapes dcgm-exporter.")],
    since: Annotated[str, typer.Option(help="How much history to read: 14d, 36h, ...")]
    = "14d",
    until: Annotated[float | None, typer.Option(
        help="End of the history, epoch seconds (default: now).")] = None,
    db: Annotated[Path, typer.Option(help="SQLite store of `gsched serve --db`, where the "
                                          "profiles go.")] = Path("gsched.db"),
    step: Annotated[float, typer.Option(
        min=0.0, help="0: every raw sample; > 0: a range query at this many seconds.")]
    = 0.0,
    metric: Annotated[str, typer.Option(help="Utilisation metric (percent).")]
    = "DCGM_FI_DEV_GPU_UTIL",
    workload_label: Annotated[str | None, typer.Option(
        help="Series label naming the workload (default: derived from the pod name).")]
    = None,
    quantile: Annotated[float, typer.Option(min=0.01, max=1.0, help="Per-slot quantile.")]
    = 0.95,
    half_life_days: Annotated[float, typer.Option(min=0.0, help="Decay of old days.")]
    = 3.0,
    slots: Annotated[int, typer.Option(min=1, max=1440, help="Slots per day.")] = 96,
    json_out: Annotated[Path | None, typer.Option(
        "--json", help="Also write the learned profiles as JSON ('-': stdout).")] = None,
    dry_run: Annotated[bool, typer.Option(help="Learn and show, store nothing.")] = False,
) -> None:
    """Learn every workload's daily profile from Prometheus and store it for serve."""
    from gsched.scheduler.packing.profiles import learn_profiles
    from gsched.traces.prometheus import PrometheusReader, parse_duration, samples_by_workload

    window = parse_duration(since)
    reader = PrometheusReader(prometheus, metric=metric, workload_label=workload_label)
    end = until if until is not None else time.time()
    t0 = time.perf_counter()
    pods = reader.read(end - window, end, step_s=step)
    if not pods:
        raise InputError(f"no {metric} samples with a pod label in the {since} before "
                         f"{end:.0f} (--until)", field="--prometheus")
    samples = samples_by_workload(pods)
    learned = learn_profiles(samples, now=end, slots=slots, quantile=quantile,
                             half_life_days=half_life_days)
    secs = time.perf_counter() - t0
    console = Console(stderr=json_out is not None and str(json_out) == "-")
    n_samples = sum(len(t) for t, _ in samples.values())
    console.print(f"read {n_samples:,} samples of {len(pods)} pods ({len(samples)} "
                  f"workloads) from {prometheus} in {secs:.1f} s")
    table = Table("workload", "samples", "days", "coverage", "peak", "valley", "confidence",
                  "source")
    for w, p in sorted(learned.items()):
        table.add_row(w, f"{p.samples:,}", f"{p.days:.1f}", f"{p.coverage:.2f}",
                      f"{p.peak:.2f}", f"{p.valley:.2f}", f"{p.confidence:.2f}", p.source)
    console.print(table)
    if json_out is not None:
        text = json.dumps({w: p.model_dump() for w, p in sorted(learned.items())}) + "\n"
        if str(json_out) == "-":
            typer.echo(text, nl=False)
        else:
            from gsched.traces.files import atomic_write_text

            try:
                atomic_write_text(json_out, text)
            except OSError as e:
                raise InputError(f"cannot write: {e.strerror}", file=str(json_out),
                                 field="--json") from None
    if dry_run:
        return
    from gsched.scheduler.extender.store import Store

    try:
        store = Store(db)
    except Exception as e:  # sqlite3.Error, OSError: not a store we can open
        raise InputError(f"cannot open the store: {e}", file=str(db), field="--db") from None
    try:
        store.put_profiles(learned)
    finally:
        store.close()
    kept = sum(1 for p in learned.values() if p.source == "learned")
    console.print(f"stored {kept} learned profiles ({len(learned) - kept} fallbacks) in {db}")


def register(app: typer.Typer) -> None:
    app.add_typer(profiles_app, name="profiles")
