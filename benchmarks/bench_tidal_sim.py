"""The tidal policy against every baseline in the simulator, and its robustness.

1. Comparison: every policy in one run on (a) `examples/tidal-mix.csv` on
   `examples/cluster.yaml` and (b) a larger trace composed the same way from the real
   sources (`gsched trace build` with 256 services and 1,000 Gavel jobs over 4 days, on
   32 nodes of 8 A100s): cost per experiment, GPUs needed, utilisation, queueing, SLO
   risk, preemptions.
2. Robustness: actual inference load departs from the learned profile (per-slot noise, a
   peak that comes later, a sudden surge); SLO risk and cost of `tidal` and `peak`.
3. Headroom sweep: how `tidal`'s headroom trades SLO risk against cost when the forecast
   is wrong (noise 0.2 and a 1 h shift; a surge).
4. Learned forecast against the real next day: the example trace's ServeGen services get
   the profile `learn_profiles` learns from the days before day d (p95, 3-day half-life)
   and actually carry day d's real ServeGen curve, for d = 11, 12, 13.

    .venv/bin/python benchmarks/bench_tidal_sim.py --legacy [--quick]

Without `--legacy` it prints the tidal loop's scoreboard (`benchmarks/scoreboard.py`):
every forecast-error scenario on the example trace and on a 7-day trace, per policy.

    .venv/bin/python benchmarks/bench_tidal_sim.py [--quick] [--replan-every 7200]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from gsched.models import DAY_SECONDS, Cluster, Job, Node, Trace
from gsched.scheduler.packing.profiles import learn_profiles
from gsched.scheduler.policies.policy import PolicyConfig
from gsched.scheduler.policies.registry import POLICIES
from gsched.simulator.engine import SimConfig
from gsched.simulator.load import LoadDeviation
from gsched.simulator.run import run_comparison
from gsched.traces.build import BuildSpec, build
from gsched.traces.cluster import load_cluster
from gsched.traces.load import load_trace
from gsched.traces.paths import shared_traces_dir
from gsched.traces.servegen import read_servegen

ROOT = Path(__file__).resolve().parents[1]
COLS = [("cost_per_experiment", "cost/exp $", "{:.2f}"), ("cost", "cost $", "{:,.0f}"),
        ("peak_occupied_gpus", "GPUs", "{}"), ("mean_gpu_utilization", "util", "{:.1%}"),
        ("completed_training_jobs", "trained", "{}"), ("queue_delay_p95_s", "q p95 h", "{:.1f}"),
        ("slo_risk_slot_minutes", "SLO risk", "{:,.0f}"), ("preemptions", "preempt", "{}"),
        ("planned_preemptions", "planned", "{}")]


def fmt(key: str, spec: str, v: object) -> str:
    if v is None:
        return "-"
    if key == "queue_delay_p95_s":
        v = float(v) / 3600
    return spec.format(v)


def table(title: str, figures: dict[str, dict], cols: list = COLS) -> None:
    print(f"\n{title}")
    head = f"{'policy':<18}" + "".join(f"{c[1]:>12}" for c in cols)
    print(head)
    print("-" * len(head))
    for name, f in figures.items():
        print(f"{name:<18}" + "".join(f"{fmt(k, s, f.get(k)):>12}" for k, _, s in cols))


def big_trace(days: float = 4, training_jobs: int = 1000) -> tuple[Trace, Cluster]:
    base = shared_traces_dir()
    spec = BuildSpec(servegen=sorted((base / "servegen").glob("*.csv")),
                     genai=base / "alibaba-genai" / "pod_gpu_duty_cycle_anon.tar.gz",
                     lora=base / "alibaba-genai" / "lora_request_trace.tar.gz",
                     gavel=base / "gavel-philly" / "ee9e8c.trace", days=days,
                     inference_services=256, training_jobs=training_jobs, max_gpus=8,
                     seed=1)
    cl = Cluster(nodes=[Node(name=f"a100-{k:02d}", gpu_count=8, gpu_model="A100")
                        for k in range(32)], source="32 x 8 A100")
    return build(spec), cl


def with_lucid_utilisation(trace: Trace, seed: int = 0) -> Trace:
    """The same trace with each training job's GPU utilisation drawn from the Lucid
    measurements (median ~0.5) instead of 1.0: training that leaves room beside it."""
    import csv

    import numpy as np

    with open(shared_traces_dir() / "lucid" / "colocate_info.csv") as f:
        util = np.array([float(r["gpu_util"]) for r in csv.DictReader(f)]) / 100.0
    rng = np.random.default_rng(seed)
    jobs = [j.model_copy(update={"utilization": float(np.clip(rng.choice(util), 0.05, 1.0))})
            if j.kind == "training" else j for j in trace.jobs]
    return Trace(jobs=jobs, slots=trace.slots, source=trace.source + " (Lucid utilisation)")


class ForecastVsActual(LoadDeviation):
    """Actual load is a real recorded day (per profile name), not a perturbation."""

    actual_by_profile: dict[str, list[float]] = {}
    #: the job's request where its booking raised it (`margins.book_job`)
    share_by_job: dict[str, float] = {}

    @property
    def active(self) -> bool:
        return True

    def actual_load(self, job: Job, predicted: np.ndarray) -> np.ndarray:
        actual = self.actual_by_profile.get((job.profile_name or "").split("@")[0])
        if actual is None or job.kind != "inference":
            return predicted
        share = self.share_by_job.get(job.id, job.gpu_share)
        return np.clip(share * np.asarray(actual), 0.0, 2.0 * share)


def learned_vs_day(trace: Trace, day: int, peak: float = 0.9) -> tuple[Trace, ForecastVsActual]:
    """ServeGen services: forecast learned from days < `day`, actual = day `day`."""
    slots = trace.slots
    forecast: dict[str, np.ndarray] = {}
    actual: dict[str, list[float]] = {}
    for k in range(8):
        t, r = read_servegen(shared_traces_dir() / "servegen" /
                             f"language-m-large-chunk-{k}-trace.csv")
        past = t < day * DAY_SECONDS
        p = learn_profiles({"c": (t[past], r[past])}, now=day * DAY_SECONDS, slots=slots,
                           capacity=1.0, min_samples=1)["c"].array()
        scale = peak / max(p.max(), 1e-9)
        name = f"learned-m-large-c{k}"
        forecast[f"servegen-m-large-c{k}"] = np.clip(p * scale, 0.0, 1.0)
        actual[name] = [float(x) for x in slot_means(t, r, day, slots) * scale]
    return with_learned_profiles(trace, forecast, actual, day)


def slot_means(t: np.ndarray, r: np.ndarray, day: int, slots: int) -> np.ndarray:
    """Day `day` of a series (t, r) as the mean of each time-of-day slot."""
    today = (t >= day * DAY_SECONDS) & (t < (day + 1) * DAY_SECONDS)
    slot = ((t[today] % DAY_SECONDS) // (DAY_SECONDS / slots)).astype(int)
    return (np.bincount(slot, weights=r[today], minlength=slots)
            / np.maximum(np.bincount(slot, minlength=slots), 1))


def with_learned_profiles(trace: Trace, forecast: dict[str, np.ndarray],
                          actual: dict[str, list[float]], day: int,
                          beyond_request: bool = False) -> tuple[Trace, ForecastVsActual]:
    """The trace with each ServeGen service booking `forecast` (renamed learned-...),
    and the day's `actual` load for the simulator to score against. With
    `beyond_request`, `forecast` may exceed 1 (the request) and a booking over the
    request raises it (`margins.book_job`)."""
    from gsched.simulator.margins import book_job

    jobs = []
    shares: dict[str, float] = {}
    for j in trace.jobs:
        if j.profile_name in forecast:
            k = j.profile_name.rsplit("c", 1)[1]
            name = f"learned-m-large-c{k}"
            if beyond_request and j.num_gpu == 1:
                booked = book_job(j, j.gpu_share * np.asarray(forecast[j.profile_name]), name)
                if booked.gpu_share != j.gpu_share:
                    shares[j.id] = j.gpu_share
                j = booked
            else:
                j = j.model_copy(update={"profile": np.clip(forecast[j.profile_name], 0, 1),
                                         "profile_name": name})
        jobs.append(j)
    return (Trace(jobs=jobs, slots=trace.slots, source=f"{trace.source} (learned, day {day})"),
            ForecastVsActual(actual_by_profile=actual, share_by_job=shares))


def compare(trace: Trace, cluster: Cluster, title: str, deviation: LoadDeviation | None = None,
            headroom: float = 0.1, policies: list[str] | None = None) -> dict[str, dict]:
    t0 = time.perf_counter()
    sim = SimConfig(deviation=deviation or LoadDeviation())
    res = run_comparison(trace, cluster, policies or list(POLICIES), "replay", sim,
                         PolicyConfig(headroom=headroom))
    figs = res.figures()
    table(f"{title}  [{time.perf_counter() - t0:.1f} s]", figs)
    return figs


def legacy(args: argparse.Namespace) -> None:
    """The sections before the tidal loop (docs/benchmarks.md, "Simulator: every policy")."""
    ex = load_trace(ROOT / "examples" / "tidal-mix.csv")
    ex_cl = load_cluster(ROOT / "examples" / "cluster.yaml")
    compare(ex, ex_cl, "examples/tidal-mix.csv on examples/cluster.yaml (64 GPUs), "
                       "headroom 0.1")
    lucid = with_lucid_utilisation(ex)
    compare(lucid, ex_cl, "example trace, training utilisation drawn from Lucid "
                          "(training can share GPUs with inference valleys)")
    if not args.quick:
        tr, cl = big_trace()
        compare(tr, cl, f"built trace: {len(tr.jobs):,} jobs over 4 days on 256 GPUs, "
                        "headroom 0.1")
    cases = {
        "noise 0.1": LoadDeviation(noise=0.1),
        "noise 0.3": LoadDeviation(noise=0.3),
        "peak 1 h late": LoadDeviation(shift_slots=4),
        "peak 2 h late": LoadDeviation(shift_slots=8),
        "surge +50% 2 h": LoadDeviation(surge=0.5, surge_start_slot=56, surge_slots=8),
    }
    for name, dev in cases.items():
        compare(ex, ex_cl, f"robustness, example trace: {name}", dev,
                policies=["peak", "binpack", "tidal"])
    rows = {}
    for name, h in (("k8s-spread", 0.1), ("peak", 0.1), ("binpack", 0.1), ("fgd", 0.1),
                    ("tidal", 0.1), ("tidal", 0.2), ("tidal", 0.3)):
        total: dict[str, float] = {}
        for day in (11, 12, 13):
            tr_d, dev = learned_vs_day(ex, day)
            f = run_comparison(tr_d, ex_cl, [name], "replay", SimConfig(deviation=dev),
                               PolicyConfig(headroom=h)).figures()[name]
            for key in ("cost_per_experiment", "cost", "slo_risk_slot_minutes",
                        "mean_gpu_utilization", "queue_delay_p95_s"):
                total[key] = total.get(key, 0.0) + (f[key] or 0.0) / 3
            for key in ("peak_occupied_gpus", "completed_training_jobs", "preemptions",
                        "planned_preemptions"):
                total[key] = f[key]
        rows[f"{name} h={h:.1f}"] = total
    table("learned ServeGen forecast vs the real next day (mean over days 11-13)", rows)
    sweeps = {"noise 0.2, peak 1 h late": LoadDeviation(noise=0.2, shift_slots=4),
              "surge +50% for 2 h at 14:00": LoadDeviation(surge=0.5, surge_start_slot=56,
                                                           surge_slots=8)}
    for title, wrong in sweeps.items():
        rows = {}
        for h in (0.0, 0.05, 0.1, 0.2, 0.3):
            f = run_comparison(ex, ex_cl, ["tidal"], "replay", SimConfig(deviation=wrong),
                               PolicyConfig(headroom=h)).figures()["tidal"]
            rows[f"tidal h={h:.2f}"] = f
        rows["peak"] = run_comparison(ex, ex_cl, ["peak"], "replay",
                                      SimConfig(deviation=wrong),
                                      PolicyConfig()).figures()["peak"]
        table(f"headroom sweep, example trace, forecast wrong ({title})", rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="only the example trace")
    ap.add_argument("--legacy", action="store_true",
                    help="the sections before the tidal loop, instead of the scoreboard")
    ap.add_argument("--replan-every", type=float, default=7200.0,
                    help="scoreboard: seconds between re-plans of tidal+plan")
    ap.add_argument("--trace", choices=["example", "7day"], default=None,
                    help="scoreboard: only this trace")
    ap.add_argument("--scenario", default=None,
                    help="scoreboard: only scenarios whose name contains this")
    ap.add_argument("--rows", default=None,
                    help="scoreboard: only these rows (comma-separated)")
    ap.add_argument("--out", type=Path, default=None,
                    help="scoreboard: JSON to write (default /tmp/gsched-scoreboard.json)")
    args = ap.parse_args()
    if args.legacy:
        legacy(args)
        return
    from scoreboard import scoreboard
    scoreboard(quick=args.quick, replan_every=args.replan_every, out=args.out,
               trace=args.trace, scenario=args.scenario,
               rows=set(args.rows.split(",")) if args.rows else None)


if __name__ == "__main__":
    main()
