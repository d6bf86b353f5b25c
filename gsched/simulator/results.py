"""What a replay produced: `SimResult`, and the figures computed from a finished
`Simulation` (utilisation, cost, queue delays, completions, the tidal loop's own)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from gsched.simulator.guard import training_figures

if TYPE_CHECKING:
    from gsched.simulator.engine import Simulation


@dataclass
class SimResult:
    """What one policy did on one trace: figures (JSON-ready) and a timeline."""

    policy: str
    figures: dict[str, float | int | None]
    timeline: list[tuple[float, float, float]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: (time, "start" | "stop", job id, node name, GPUs), with config.record_placements
    placements: list[tuple[float, str, str, str, tuple[int, ...]]] = field(
        default_factory=list)


def _pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def result_of(sim: Simulation, start: float, wall: float) -> SimResult:
    """The figures (JSON-ready), timeline and warnings of a finished replay."""
    a = sim.acct
    span = max(sim.now - start, 1e-9)
    gpus = a.total_gpus
    hours = a.slot_time.reshape(24, -1).sum(axis=1) if sim.state.slots % 24 == 0 else None
    peak_u = valley_u = None
    peak_h = valley_h = None
    if hours is not None and hours.sum() > 0:
        hu = a.slot_util.reshape(24, -1).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            per_hour = np.where(hours > 0, hu / hours / gpus, np.nan)
        if np.isfinite(per_hour).any():
            peak_h = int(np.nanargmax(per_hour))
            valley_h = int(np.nanargmin(per_hour))
            peak_u, valley_u = float(per_hour[peak_h]), float(per_hour[valley_h])
    trained = sim.completed["training"]
    unfinished = sim.queued + sum(
        1 for j in sim.state.running
        if sim.runs[j].job.kind == "training")
    figures: dict[str, float | int | None] = {
        "gpu_allocation_rate": a.alloc_s / (gpus * span),
        "mean_gpu_utilization": a.util_s / (gpus * span),
        "peak_hour": peak_h,
        "peak_hour_gpu_utilization": peak_u,
        "valley_hour": valley_h,
        "valley_hour_gpu_utilization": valley_u,
        "occupied_gpu_hours": a.occupied_s / 3600.0,
        "peak_occupied_gpus": a.peak_occupied,
        "cost": a.cost,
        "cost_per_experiment": (a.cost / trained) if trained else None,
        "completed_training_jobs": trained,
        "completed_inference_jobs": sim.completed["inference"],
        "queue_delay_p50_s": _pct(sim.queue_delays, 50),
        "queue_delay_p95_s": _pct(sim.queue_delays, 95),
        "queue_delay_p99_s": _pct(sim.queue_delays, 99),
        "training_queue_delay_p95_s": _pct(sim.training_queue_delays, 95),
        "jct_mean_s": float(np.mean(sim.jcts)) if sim.jcts else None,
        "jct_p95_s": _pct(sim.jcts, 95),
        "makespan_s": (sim.last_training_end - start) if sim.last_training_end else None,
        "slo_risk_slot_minutes": a.risk_s / 60.0,
        "preemptions": sim.preemptions,
        "planned_preemptions": sim.planned_moves,
        "preempted_gpu_hours_lost": sim.lost_gpu_s / 3600.0,
        "unschedulable_jobs": len(sim.unschedulable),
        "unfinished_jobs": unfinished,
        "simulated_seconds": span,
        "events": sim.events,
        "wall_seconds": wall,
        "events_per_second": sim.events / wall if wall > 0 else None,
    }
    figures |= training_figures(sim)
    for hook in sim.hooks:
        figures |= hook.figures()
    warnings = list(sim.warnings)
    if sim.unschedulable:
        shown = ", ".join(sim.unschedulable[:5])
        more = f" and {len(sim.unschedulable) - 5} more" if len(sim.unschedulable) > 5 else ""
        warnings.append(f"{len(sim.unschedulable)} job(s) can never fit any node of this "
                        f"cluster and were not scheduled: {shown}{more}")
    return SimResult(sim.policy.name, figures, a.timeline, warnings, sim.placements)
