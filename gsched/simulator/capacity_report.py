"""Presenting a capacity plan: the per-policy table and the cost-against-size plot."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from gsched.simulator.capacity import MONTH_HOURS, REFERENCES, CapacityPlan
from gsched.simulator.report import fmt_duration


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:+.1f}%"


def capacity_table(plan: CapacityPlan) -> Table:
    """One row per policy: size, monthly cost, saving against the references."""
    table = Table()
    for col, just in (("policy", "left"), ("nodes", "right"), ("GPUs", "right"),
                      ("monthly cost", "right"),
                      *((f"saving vs {r}", "right") for r in REFERENCES),
                      ("train queue p95", "right"), ("SLO risk", "right"),
                      ("sizes simulated", "right")):
        table.add_column(col, justify=just, no_wrap=True)  # type: ignore[arg-type]
    for name, p in plan.plans.items():
        f = p.figures
        q = f.get("training_queue_delay_p95_s")
        if p.nodes is None:
            size = ["not met", f"> {max(p.search.probes) * p.shape.gpus:,}", "-"]
        else:
            size = [f"{p.nodes:,}", f"{p.gpus:,}", f"${p.monthly_cost:,.0f}"]
        table.add_row(name, *size, *(_pct(plan.saving(name, r)) for r in REFERENCES),
                      "-" if q is None else fmt_duration(q),
                      f"{f.get('slo_risk_slot_minutes') or 0:.1f}",
                      str(len(p.search.probes)))
    return table


def plot_capacity(path: Path, plan: CapacityPlan, title: str) -> None:
    """Monthly cost against cluster size, one row of probes per policy.

    Every simulated size is a marker on its policy's line: filled where the trace met
    the targets, a cross where it did not; the star is the answer (the smallest size
    that met them, with one node fewer failing).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    names = list(plan.plans)
    fig, ax = plt.subplots(figsize=(9, 1.6 + 0.7 * len(names)))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    per_gpu_month = 0.0
    for i, name in enumerate(names):
        p = plan.plans[name]
        per_gpu_month = p.price * MONTH_HOURS
        c = colors[i % len(colors)]
        sizes = sorted(p.search.probes)
        costs = [n * p.shape.gpus * per_gpu_month for n in sizes]
        ax.plot(costs, [i] * len(sizes), color=c, lw=0.8, alpha=0.5)
        met = [p.search.probes[n].met for n in sizes]
        ax.scatter([c_ for c_, m in zip(costs, met, strict=True) if m],
                   [i] * sum(met), color=c, marker="o", s=28, zorder=3)
        ax.scatter([c_ for c_, m in zip(costs, met, strict=True) if not m],
                   [i] * (len(met) - sum(met)), color=c, marker="x", s=28, zorder=3)
        if p.monthly_cost is not None:
            ax.scatter([p.monthly_cost], [i], color=c, marker="*", s=220, zorder=4,
                       edgecolors="black", linewidths=0.6)
            ax.annotate(f"{p.gpus:,} GPUs  ${p.monthly_cost:,.0f}", (p.monthly_cost, i),
                        xytext=(8, 7), textcoords="offset points", fontsize=8)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"${v:,.0f}"))
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlabel("monthly cost of the cluster (USD)   [o meets targets, x misses, "
                  "* smallest that meets]")
    if per_gpu_month:
        sec = ax.secondary_xaxis("top", functions=(lambda c: c / per_gpu_month,
                                                   lambda g: g * per_gpu_month))
        sec.set_xlabel("cluster size (GPUs)")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
