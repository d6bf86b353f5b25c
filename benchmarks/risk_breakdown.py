"""Where a policy's inference SLO risk comes from, scenario by scenario.

SLO risk is GPU-time on which a GPU holding inference carries actual load over 1.0. This
script runs the scoreboard's rows and splits that time by what was on the GPU then:

- `alone`: an inference job whose own actual load is over the GPU (no placement helps);
- `inf+inf within peak`: inference colocated with inference, the sum of their booked
  peaks within the GPU (what `peak` reservation would also do);
- `inf+inf beyond peak`: inference colocated with inference beyond what `peak` would
  put on the GPU (their booked peaks sum over 1: sharing by profile);
- `training`: inference alone would fit; the training beside it tips the GPU over (the
  time from the overload to the guard's eviction, or with no guard, to the next slot's
  move).

    .venv/bin/python benchmarks/risk_breakdown.py --trace example --scenario surge \
        --rows peak,tidal-loop
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from bench_tidal_sim import ROOT, big_trace, with_lucid_utilisation
from scoreboard import LEARNED_MARGIN, SCENARIOS, _row_plans, learned_vs_day

from gsched.scheduler.policies.policy import PolicyConfig
from gsched.scheduler.policies.registry import make_policy
from gsched.scheduler.policies.state import EPS
from gsched.simulator.accounting import Accounting, slot_durations
from gsched.simulator.colocation import default_model
from gsched.simulator.engine import SimConfig, Simulation
from gsched.simulator.margins import with_margins
from gsched.traces.cluster import load_cluster
from gsched.traces.load import load_trace

CATS = ("alone", "inf+inf within peak", "inf+inf beyond peak", "training")


class Breakdown:
    """Attached to one simulation's accounting: splits each interval's overload."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.seconds = dict.fromkeys(CATS, 0.0)

    def interval(self, t0: float, t1: float) -> None:
        sim, acct = self.sim, self.sim.acct
        dur = slot_durations(t0, t1, acct.slots)
        slots = np.flatnonzero((dur > 0) & (acct.over_by_slot > EPS))
        if not len(slots):
            return
        st = sim.state
        for s in slots.tolist():
            over = (sim.actual[:, :, s] > 1.0 + EPS) & (st.inference_on_gpu > 0)
            for n, g in zip(*np.nonzero(over), strict=True):
                ids = list(sim.on_gpu.get((int(n), int(g)), ()))
                inf = [j for j in ids if sim.runs[j].job.kind == "inference"]
                each = [float(self._actual(j)[s]) for j in inf]
                if max(each, default=0.0) > 1.0 + EPS:
                    cat = "alone"
                elif sum(each) <= 1.0 + EPS:
                    cat = "training"
                else:
                    peaks = sum(float(st.running[j].load.max()) for j in inf)
                    cat = "inf+inf beyond peak" if peaks > 1.0 + EPS else "inf+inf within peak"
                self.seconds[cat] += float(dur[s])

    def _actual(self, jid: str) -> np.ndarray:
        run = self.sim.runs[jid]
        return run.actual if run.actual is not None else self.sim.state.running[jid].load


_orig_advance = Accounting.advance


def _advance(self: Accounting, t: float) -> None:
    b = getattr(self, "breakdown", None)
    if b is not None and self.last_t is not None and t > self.last_t:
        b.interval(self.last_t, t)
    _orig_advance(self, t)


Accounting.advance = _advance  # type: ignore[method-assign]


def run_row(trace, cluster, pol: str, h: float, sim_cfg: SimConfig,
            reserve: float = 0.0) -> dict:
    cfg = PolicyConfig(headroom=h, inference_reserve=reserve).model_copy(
        update={"workload": trace.jobs})
    sim = Simulation(trace, cluster, make_policy(pol, cfg), sim_cfg, default_model())
    sim.acct.breakdown = Breakdown(sim)  # type: ignore[attr-defined]
    res = sim.run()
    out = {k: v / 60.0 for k, v in sim.acct.breakdown.seconds.items()}  # type: ignore
    out["total (slot-min)"] = res.figures["slo_risk_slot_minutes"]
    out["cost/exp"] = res.figures["cost_per_experiment"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trace", choices=["example", "7day"], default="example")
    ap.add_argument("--scenario", default="surge", help="a substring of a scenario name")
    ap.add_argument("--rows", default="peak,tidal-loop")
    ap.add_argument("--reserve", type=float, default=None,
                    help="override the tidal rows' inference reserve")
    args = ap.parse_args()
    if args.trace == "example":
        trace = load_trace(ROOT / "examples" / "tidal-mix.csv")
        cluster = load_cluster(ROOT / "examples" / "cluster.yaml")
        days: tuple[int, ...] = (12,)
    else:
        tr, cluster = big_trace(days=7, training_jobs=1750)
        trace = with_lucid_utilisation(tr)
        days = (12,)
    sname = next(k for k in SCENARIOS if args.scenario in k)
    dev = SCENARIOS[sname]
    plans = _row_plans(7200.0)
    print(f"{args.trace}: {sname} (learned: day {days[0]})")
    print(f"{'row':<17}" + "".join(f"{c:>22}" for c in CATS) + f"{'total':>10}{'cost':>8}")
    for row in args.rows.split(","):
        pol, h, margins, g, every = plans[row][:5]
        t0 = time.perf_counter()
        if dev is None:
            tr_d, d = learned_vs_day(trace, days[0], margins, kind=LEARNED_MARGIN,
                                     beyond_request=margins)
        else:
            tr_d, d = (with_margins(trace, dev, q=0.9, beyond_request=True)
                       if margins else (trace, dev))
        r = plans[row][5] if len(plans[row]) > 5 else 0.0
        if args.reserve is not None and pol == "tidal" and row != "tidal":
            r = args.reserve
        f = run_row(tr_d, cluster, pol, h, SimConfig(deviation=d, guard=g, replan_every_s=every),
                    r)
        print(f"{row:<17}" + "".join(f"{f[c]:>22,.0f}" for c in CATS)
              + f"{f['total (slot-min)']:>10,.0f}{f['cost/exp']:>8.2f}"
              f"  [{time.perf_counter() - t0:.0f} s]", flush=True)


if __name__ == "__main__":
    main()
