"""Presenting results: the policy-beside-policy table, the JSON contract, the plot."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from gsched.traces.files import atomic_write_text

#: (key, label, format) rows of the replay table, in order.
REPLAY_ROWS = [
    ("gpu_allocation_rate", "GPU allocation rate", "pct"),
    ("mean_gpu_utilization", "Mean GPU utilisation", "pct"),
    ("peak_hour_gpu_utilization", "Peak-hour GPU utilisation", "pct"),
    ("valley_hour_gpu_utilization", "Valley-hour GPU utilisation", "pct"),
    ("peak_occupied_gpus", "GPUs needed (peak occupied)", "int"),
    ("occupied_gpu_hours", "Occupied GPU-hours", "f1"),
    ("cost", "Cost (USD)", "usd"),
    ("cost_per_experiment", "Cost per experiment (USD)", "usd"),
    ("completed_training_jobs", "Completed training jobs", "int"),
    ("queue_delay_p50_s", "Queue delay p50", "dur"),
    ("queue_delay_p95_s", "Queue delay p95", "dur"),
    ("queue_delay_p99_s", "Queue delay p99", "dur"),
    ("jct_mean_s", "JCT mean", "dur"),
    ("jct_p95_s", "JCT p95", "dur"),
    ("makespan_s", "Makespan", "dur"),
    ("slo_risk_slot_minutes", "SLO risk (GPU slot-minutes)", "num"),
    ("preemptions", "Preemptions (planned)", "preempt"),
    ("preempted_gpu_hours_lost", "GPU-hours lost to preemption", "f2"),
    ("unschedulable_jobs", "Jobs that never fit", "int"),
    ("unfinished_jobs", "Training unfinished at end", "int"),
    ("wall_seconds", "Simulation wall time", "secs"),
]

INFLATION_ROWS = [
    ("allocation_ratio_at_100", "GPU allocation at 100% requested", "pct"),
    ("allocation_ratio_at_100_std", "  std over seeds", "pct"),
    ("fragmented_gpu_share", "Fragmented GPU share at 100%", "pct"),
    ("failed_pods_at_100", "Failed pods at 100% (mean)", "num"),
    ("seeds", "Seeds", "int"),
    ("wall_seconds", "Wall time (all seeds)", "secs"),
]


def fmt_duration(s: float) -> str:
    if s < 60:
        return f"{s:.0f}s"
    if s < 3600:
        return f"{s / 60:.1f}m"
    if s < 86400 * 2:
        return f"{s / 3600:.1f}h"
    return f"{s / 86400:.1f}d"


def _fmt(value: object, kind: str, figures: dict) -> str:
    if value is None:
        return "-"
    v = float(value)  # type: ignore[arg-type]
    if kind == "pct":
        return f"{v * 100:.1f}%"
    if kind == "int":
        return f"{int(v):,}"
    if kind == "usd":
        return f"${v:,.2f}"
    if kind == "dur":
        return fmt_duration(v)
    if kind == "secs":
        return f"{v:.2f}s"
    if kind == "f2":
        return f"{v:,.2f}"
    if kind == "num":  # a count, or a mean of counts: whole numbers print as integers
        return f"{v:,.0f}" if v.is_integer() else f"{v:,.1f}"
    if kind == "preempt":
        return f"{int(v):,} ({int(figures.get('planned_preemptions') or 0):,})"
    return f"{v:,.1f}"


def comparison_table(policies: dict[str, dict], mode: str) -> Table:
    rows = REPLAY_ROWS if mode == "replay" else INFLATION_ROWS
    if all((f.get("seeds") or 0) <= 1 for f in policies.values()):
        rows = [r for r in rows if r[0] != "allocation_ratio_at_100_std"]  # one seed: no spread
    table = Table()
    table.add_column("metric", style="bold", no_wrap=True)
    for name in policies:
        table.add_column(name, justify="right", no_wrap=True)
    for key, label, kind in rows:
        table.add_row(label, *[_fmt(f.get(key), kind, f) for f in policies.values()])
    return table


def deviation_note(noise: float = 0.0, shift_slots: int = 0, surge: float = 0.0,
                   surge_start_slot: int = 0, surge_slots: int = 0) -> str:
    """How actual load departed from the profiles, for the table's header ('' if not)."""
    parts = []
    if noise:
        parts.append(f"noise {noise:g}")
    if shift_slots:
        parts.append(f"peaks shifted {shift_slots:+d} slots")
    if surge and surge_slots:
        parts.append(f"surge +{surge:.0%} over slots {surge_start_slot}-"
                     f"{surge_start_slot + surge_slots - 1}")
    return "actual load departs from the profiles: " + ", ".join(parts) if parts else ""


def print_table(console: Console, title: str, policies: dict[str, dict], mode: str,
                note: str = "") -> None:
    console.print(title, soft_wrap=True, highlight=False)
    if note:
        console.print(note, soft_wrap=True, highlight=False)
    console.print(comparison_table(policies, mode))


def write_json(path: Path, payload: dict) -> None:
    """Write the JSON contract atomically (see docs/architecture.md)."""
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=False, default=float) + "\n")


def plot_timelines(path: Path, title: str, timelines: dict[str, list[tuple[float, float, float]]],
                   mode: str = "replay",
                   curves: dict[str, list[tuple[float, float]]] | None = None) -> None:
    """Allocation and utilisation over time per policy (replay), or allocation against
    requested capacity (inflation)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if mode == "inflation":
        fig, ax = plt.subplots(figsize=(8, 5))
        for name, curve in (curves or {}).items():
            if curve:
                x, y = zip(*curve, strict=True)
                ax.plot([v * 100 for v in x], [v * 100 for v in y], label=name)
        ax.set_xlabel("GPUs requested (% of capacity)")
        ax.set_ylabel("GPUs allocated (% of capacity)")
        ax.axvline(100, color="grey", lw=0.8, ls="--")
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
        ax.set_title(title)
    else:
        fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
        for name, tl in timelines.items():
            if not tl:
                continue
            t0 = tl[0][0]
            hours = [(t - t0) / 3600 for t, _, _ in tl]
            # Figures are constant until the next point: draw steps, not slopes.
            ax1.step(hours, [a * 100 for _, a, _ in tl], where="post", label=name, lw=1)
            ax2.step(hours, [u * 100 for _, _, u in tl], where="post", label=name, lw=1)
        ax1.set_ylabel("GPU allocation (%)")
        ax2.set_ylabel("GPU utilisation (%)")
        ax2.set_xlabel("hours since first arrival")
        if ax1.get_legend_handles_labels()[0]:
            ax1.legend(loc="upper right", fontsize="small")
        ax1.set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
