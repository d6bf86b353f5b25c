"""The tidal loop's scoreboard: every forecast-error scenario, per policy.

Traces:
- `examples/tidal-mix.csv` on `examples/cluster.yaml` (64 A100);
- a 7-day trace built from the real sources (`gsched trace build --days 7
  --inference-services 256 --training-jobs 1750 --max-gpus 8 --seed 1`: ServeGen, GenAI
  duty-cycle and LoRA inference curves, Gavel/Philly training arrivals) on 32 x 8 A100,
  with each training job's GPU utilisation drawn from the Lucid measurements (so
  training can share a GPU with an inference valley, the case the guard exists for).

Scenarios (actual inference load against the forecast the policies see): exact;
per-slot noise 10 % and 20 %; a +50 % surge for 2 h at 14:00; the peak 1 h late; and
profiles learned from history against the real next day (the ServeGen-backed services
book the p95 learned from days < d and carry day d's recorded curve; d = 11, 12, 13 on
the example, d = 12 on the 7-day trace).

Rows:
- `peak`, `fgd`: the baselines, under the same load guard;
- `tidal`: the online policy as it was (headroom 0.1, no guard, one global headroom);
- `tidal-loop`: forecast x (1 + each service's own margin, p90 of its relative excess
  on three held-back days; for the learned-vs-real scenario, forecast + the p90 of its
  absolute excess, the kind the forecast backtest chose), headroom 0.05, the load
  guard at a 10 s report interval (safe line 1.0, recede line 0.9, forecast tolerance
  0.15), a 1 h promised window for training;
- `tidal-loop h=0`: the same with no global headroom (the margins alone);
- `tidal-loop+plan`: `tidal-loop h=0` following a CP-SAT re-plan of running and queued
  work every `replan_every` seconds (move budget 4, 0.5 s per plan).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from bench_tidal_sim import (
    ROOT,
    ForecastVsActual,
    big_trace,
    slot_means,
    with_learned_profiles,
    with_lucid_utilisation,
)

from gsched.models import DAY_SECONDS, Trace
from gsched.scheduler.packing.forecast import booking, error_margin
from gsched.scheduler.packing.profiles import learn_profiles
from gsched.scheduler.policies.policy import PolicyConfig
from gsched.simulator.engine import SimConfig
from gsched.simulator.guard import GuardConfig
from gsched.simulator.load import LoadDeviation
from gsched.simulator.margins import with_margins
from gsched.simulator.run import run_comparison
from gsched.traces.cluster import load_cluster
from gsched.traces.load import load_trace
from gsched.traces.paths import shared_traces_dir
from gsched.traces.servegen import read_servegen

LOOP_HEADROOM = 0.05
#: the relative surge inference sharing a GPU with inference must survive
#: (`PolicyConfig.inference_reserve`): the surge the operator insures against
LOOP_RESERVE = 0.5
MARGIN_Q = 0.9
#: learned vs real: the margin kind the forecast backtest chose (bench_forecast.py)
LEARNED_MARGIN = "additive"
SURGE = LoadDeviation(surge=0.5, surge_start_slot=56, surge_slots=8)
COLS = [("cost_per_experiment", "cost/exp $", "{:.2f}"),
        ("training_queue_delay_p95_s", "q p95 h", "{:.2f}"),
        ("jct_mean_s", "JCT h", "{:.2f}"),
        ("slo_risk_slot_minutes", "SLO risk", "{:,.0f}"),
        ("evictions_per_training_job", "evict/job", "{:.3f}"),
        ("gpu_hours_lost_share", "lost %", "{:.2%}"),
        ("guard_evictions", "guard ev", "{}"),
        ("replan_moves", "plan mv", "{}"),
        ("completed_training_jobs", "trained", "{}")]


def fmt(key: str, spec: str, v: object) -> str:
    if v is None:
        return "-"
    if key.endswith("_s") and key != "wall_seconds":
        v = float(v) / 3600  # type: ignore[arg-type]
    return spec.format(v)


def table(title: str, rows: dict[str, dict]) -> None:
    print(f"\n{title}")
    head = f"{'policy':<17}" + "".join(f"{c[1]:>11}" for c in COLS)
    print(head)
    print("-" * len(head))
    for name, f in rows.items():
        print(f"{name:<17}" + "".join(f"{fmt(k, s, f.get(k)):>11}" for k, _, s in COLS))


# -- learned from history against the real next day ---------------------------------
def _servegen(k: int) -> tuple[np.ndarray, np.ndarray]:
    return read_servegen(shared_traces_dir() / "servegen" /
                         f"language-m-large-chunk-{k}-trace.csv")


def _learned(t: np.ndarray, r: np.ndarray, day: int, slots: int) -> np.ndarray:
    past = t < day * DAY_SECONDS
    return learn_profiles({"c": (t[past], r[past])}, now=day * DAY_SECONDS, slots=slots,
                          capacity=1.0, min_samples=1)["c"].array()


def learned_vs_day(trace: Trace, day: int, margins: bool, peak: float = 0.9,
                   held_back: int = 3, kind: str = "relative",
                   q: float = MARGIN_Q, beyond_request: bool = False
                   ) -> tuple[Trace, ForecastVsActual]:
    """ServeGen services book the p95 learned from days < `day` (times 1 + their own
    margin when `margins`: p99 relative excess of days day-3..day-1, each forecast from
    the days before it) and carry day `day`'s real curve."""
    slots = trace.slots
    booked: dict[str, np.ndarray] = {}
    actual: dict[str, list[float]] = {}
    for k in range(8):
        t, r = _servegen(k)
        p = _learned(t, r, day, slots)
        scale = peak / max(p.max(), 1e-9)
        m = 0.0
        if margins:
            held = range(day - held_back, day)
            m = error_margin([_learned(t, r, d, slots) * scale for d in held],
                             [slot_means(t, r, d, slots) * scale for d in held], q, kind)
        booked[f"servegen-m-large-c{k}"] = booking(p * scale, m, kind=kind,
                                                   cap=np.inf if beyond_request else 1.0)
        actual[f"learned-m-large-c{k}"] = [float(x) for x in
                                           slot_means(t, r, day, slots) * scale]
    return with_learned_profiles(trace, booked, actual, day, beyond_request)


# -- one scenario ----------------------------------------------------------------------
def _run(trace: Trace, cluster, policy: str, headroom: float, sim: SimConfig,
         reserve: float = 0.0) -> dict:
    return run_comparison(trace, cluster, [policy], "replay", sim,
                          PolicyConfig(headroom=headroom, inference_reserve=reserve)
                          ).figures()[policy]


def _row_plans(replan_every: float) -> dict[str, tuple]:
    """Per row: (policy, headroom, own margins, guard, re-plan interval, inference
    reserve)."""
    guard = GuardConfig()
    r = LOOP_RESERVE
    return {"peak": ("peak", 0.1, False, guard, None, 0.0),
            "fgd": ("fgd", 0.1, False, guard, None, 0.0),
            "tidal": ("tidal", 0.1, False, None, None, 0.0),
            "tidal-loop r=0": ("tidal", LOOP_HEADROOM, True, guard, None, 0.0),
            "tidal-loop r=0 h=0": ("tidal", 0.0, True, guard, None, 0.0),
            "tidal-loop": ("tidal", LOOP_HEADROOM, True, guard, None, r),
            "tidal-loop r=0.35": ("tidal", LOOP_HEADROOM, True, guard, None, 0.35),
            "tidal-loop h=0": ("tidal", 0.0, True, guard, None, r),
            "tidal-loop+plan": ("tidal", 0.0, True, guard, replan_every, r)}


def scenario_rows(trace: Trace, cluster, dev: LoadDeviation | None, replan_every: float,
                  learned_days: tuple[int, ...] = (), only: set[str] | None = None
                  ) -> dict[str, dict]:
    """Every row of one scenario (`dev`; or, with `learned_days`, learned vs real)."""
    rows: dict[str, dict] = {}
    plans = _row_plans(replan_every)
    for name, (pol, h, margins, g, every, reserve) in plans.items():
        if only is not None and name not in only:
            continue
        t0 = time.perf_counter()
        if learned_days:
            per_day = []
            for d in learned_days:
                tr_d, actual = learned_vs_day(trace, d, margins, kind=LEARNED_MARGIN,
                                              beyond_request=margins)
                per_day.append(_run(tr_d, cluster, pol, h,
                                    SimConfig(deviation=actual, guard=g, replan_every_s=every),
                                    reserve))
            f = {k: (float(np.mean([x[k] for x in per_day]))
                     if all(isinstance(x.get(k), int | float) for x in per_day) else None)
                 for k in per_day[0]}
        else:
            assert dev is not None
            tr, d = (with_margins(trace, dev, q=MARGIN_Q, beyond_request=True) if margins
                     else (trace, dev))
            f = _run(tr, cluster, pol, h, SimConfig(deviation=d, guard=g, replan_every_s=every),
                     reserve)
        f["bench_seconds"] = time.perf_counter() - t0
        rows[name] = f
    return rows


SCENARIOS: dict[str, LoadDeviation | None] = {
    "exact forecast": LoadDeviation(),
    "noise 10%": LoadDeviation(noise=0.1),
    "noise 20%": LoadDeviation(noise=0.2),
    "surge +50% 2 h at 14:00": SURGE,
    "peak 1 h late": LoadDeviation(shift_slots=4),
    "learned vs real next day": None,
}


def verdict(rows: dict[str, dict], exact: bool, row: str = "tidal-loop") -> str:
    t, p, g = rows[row], rows["peak"], rows["fgd"]
    tp = rows["tidal-loop+plan"]
    base = rows["tidal-loop h=0"]
    vs_peak = t["cost_per_experiment"] / p["cost_per_experiment"] - 1
    vs_fgd = t["cost_per_experiment"] / g["cost_per_experiment"] - 1
    plan_vs = tp["cost_per_experiment"] / base["cost_per_experiment"] - 1
    need = -0.15 if exact else -0.10
    return (f"{row} vs peak: cost {vs_peak:+.1%} (target <= {need:.0%}), risk "
            f"{t['slo_risk_slot_minutes']:,.1f} vs {p['slo_risk_slot_minutes']:,.1f} "
            f"({'<=' if t['slo_risk_slot_minutes'] <= p['slo_risk_slot_minutes'] else '>'}); "
            f"vs fgd: cost {vs_fgd:+.1%} (target <= -20%); +plan vs online: cost "
            f"{plan_vs:+.1%}, risk {tp['slo_risk_slot_minutes']:,.1f} vs "
            f"{base['slo_risk_slot_minutes']:,.1f}")


def scoreboard(quick: bool = False, replan_every: float = 7200.0,
               out: Path | None = None, trace: str | None = None,
               scenario: str | None = None, rows: set[str] | None = None) -> dict:
    """Every scenario of every trace (`trace`: only "example" or "7day"; `scenario`:
    only the scenarios whose name contains it; `rows`: only these rows)."""
    ex = load_trace(ROOT / "examples" / "tidal-mix.csv")
    ex_cl = load_cluster(ROOT / "examples" / "cluster.yaml")
    traces = [("example trace (64 GPUs)", ex, ex_cl, (11, 12, 13))] if trace != "7day" else []
    if not quick and trace != "example":
        tr, cl = big_trace(days=7, training_jobs=1750)
        traces.append(("7-day trace, Lucid training utilisation (256 GPUs)",
                       with_lucid_utilisation(tr), cl, (12,)))
    result: dict = {}
    for tname, tr_, cluster, days in traces:
        result[tname] = {}
        for sname, dev in SCENARIOS.items():
            if scenario is not None and scenario not in sname:
                continue
            got = scenario_rows(tr_, cluster, dev, replan_every,
                                learned_days=days if dev is None else (), only=rows)
            result[tname][sname] = got
            secs = sum(r["bench_seconds"] for r in got.values())
            table(f"{tname}: {sname}  [{secs:.0f} s]", got)
            for row in ("tidal-loop", "tidal-loop h=0"):
                if all(k in got for k in (row, "peak", "fgd", "tidal-loop h=0",
                                          "tidal-loop+plan")):
                    print("  " + verdict(got, sname == "exact forecast", row), flush=True)
    path = out or Path("/tmp/gsched-scoreboard.json")
    path.write_text(json.dumps(result, indent=1, default=float))
    print(f"\nwrote {path}")
    return result


MD_COLS = [("cost_per_experiment", "cost/exp", "${:.2f}"),
           ("training_queue_delay_p95_s", "train queue p95", "{:.2f} h"),
           ("jct_mean_s", "JCT mean", "{:.2f} h"),
           ("slo_risk_slot_minutes", "SLO risk (slot-min)", "{:,.0f}"),
           ("evictions_per_training_job", "evictions/job", "{:.3f}"),
           ("gpu_hours_lost_share", "GPU-h lost", "{:.2%}"),
           ("guard_evictions", "guard evictions", "{:.0f}"),
           ("replan_moves", "plan moves", "{:.0f}")]


def markdown(result: dict) -> str:
    """The scoreboard as markdown tables (for docs/benchmarks.md)."""
    out = []
    for tname, scen in result.items():
        for sname, rows in scen.items():
            out.append(f"\n**{tname}: {sname}**\n")
            out.append("| policy | " + " | ".join(c[1] for c in MD_COLS) + " |")
            out.append("| --- |" + " ---: |" * len(MD_COLS))
            order = list(_row_plans(0.0))
            for name, f in sorted(rows.items(), key=lambda kv: order.index(kv[0])
                                  if kv[0] in order else len(order)):
                cells = [fmt(k, s, f.get(k)) if k not in ("training_queue_delay_p95_s",
                                                          "jct_mean_s")
                         else ("-" if f.get(k) is None else s.format(f[k] / 3600))
                         for k, _, s in MD_COLS]
                out.append(f"| {name} | " + " | ".join(cells) + " |")
            for row in ("tidal-loop r=0", "tidal-loop r=0 h=0", "tidal-loop",
                        "tidal-loop r=0.35", "tidal-loop h=0"):
                if all(k in rows for k in (row, "peak", "fgd", "tidal-loop h=0",
                                           "tidal-loop+plan")):
                    out.append(f"\n{verdict(rows, sname == 'exact forecast', row)}")
    return "\n".join(out)


def merge(parts: list[dict]) -> dict:
    """Saved runs of parts of the scoreboard as one (later parts add rows)."""
    out: dict = {}
    for part in parts:
        for tname, scen in part.items():
            for sname, rows in scen.items():
                out.setdefault(tname, {}).setdefault(sname, {}).update(rows)
    return out


if __name__ == "__main__":  # render saved runs: python benchmarks/scoreboard.py RUN.json...
    import sys

    print(markdown(merge([json.loads(Path(a).read_text()) for a in sys.argv[1:]])))
