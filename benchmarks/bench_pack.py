"""Packing quality and solve time of the tidal packer (`gsched.scheduler.packing`).

For 100, 1,000 and 10,000 workloads with real daily curves (see tidal_workloads.py):
GPUs used by peak-reservation FFD, profile-aware FFD and the packer (greedy + eject +
numpy ruin-and-recreate + CP-SAT LNS), against two lower bounds: the issue's load bound
ceil(max_t sum load / usable capacity) and gsched's stronger bound (load, per-slot
conflicts, clique, and the clique's LP strengthening). "seconds" is the whole call,
bounds and baselines included.

    .venv/bin/python benchmarks/bench_pack.py [--sizes 100,1000,10000] [--time-limit 10]

Wall-clock budgets (`deterministic=False`), one CP-SAT worker: the machine has two
cores and other work may be running, so times are indicative.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tidal_workloads import cluster_for, tidal_mix  # noqa: E402

from gsched.scheduler.packing.pack import pack_problem  # noqa: E402
from gsched.scheduler.packing.plan import check_plan  # noqa: E402
from gsched.scheduler.packing.problem import build_problem  # noqa: E402


def run(n: int, mix: str, time_limit: float, headroom: float, seed: int) -> dict:
    share = {"tidal": 0.2, "inference": 0.0}[mix]
    wl = tidal_mix(n, seed=seed, training_share=share)
    t0 = time.perf_counter()
    prob = build_problem(wl, cluster_for(n), headroom)
    plan, assignment = pack_problem(prob, time_limit=time_limit, seed=seed,
                                    deterministic=False)
    wall = time.perf_counter() - t0
    errors = check_plan(prob, assignment)
    return {
        "mix": mix, "n": n, "load_lb": plan.load_lower_bound, "lb": plan.lower_bound,
        "peak": plan.peak_reservation_gpus, "ffd": plan.profile_ffd_gpus,
        "packer": plan.gpus_used, "gap": plan.gap,
        "gap_load": (plan.gpus_used - plan.load_lower_bound) / plan.load_lower_bound,
        "saved": 1 - plan.gpus_used / plan.peak_reservation_gpus,
        "seconds": wall, "steps": plan.lns_iterations, "status": plan.status,
        "feasible": not errors,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="100,1000,10000")
    ap.add_argument("--mixes", default="tidal,inference")
    ap.add_argument("--time-limit", type=float, default=10.0)
    ap.add_argument("--headroom", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    head = (f"{'mix':<10}{'workloads':>10}{'load LB':>9}{'LB':>7}{'peak FFD':>10}"
            f"{'prof FFD':>10}{'packer':>8}{'gap LB':>8}{'gap load':>9}{'vs peak':>9}"
            f"{'seconds':>9}{'steps':>7}  status")
    print(head)
    print("-" * len(head))
    for mix in args.mixes.split(","):
        for n in (int(x) for x in args.sizes.split(",")):
            limit = args.time_limit if n <= 1000 else args.time_limit * 3
            r = run(n, mix, limit, args.headroom, args.seed)
            assert r["feasible"], "packer produced an infeasible plan"
            print(f"{r['mix']:<10}{r['n']:>10,}{r['load_lb']:>9,}{r['lb']:>7,}{r['peak']:>10,}"
                  f"{r['ffd']:>10,}{r['packer']:>8,}{r['gap']:>8.1%}{r['gap_load']:>9.1%}"
                  f"{-r['saved']:>9.1%}{r['seconds']:>9.1f}{r['steps']:>7}  {r['status']}",
                  flush=True)


if __name__ == "__main__":
    main()
