"""Where is the packer's gap on the field mix: in the plan or in the bound?

On a small field-mix instance (`tidal_workloads.field_mix`, every real curve, binding
memory), this prints every sound bound (no time box, the LP included), what `gsched
pack`'s pipeline gets in its normal `--limit`, and what one CP-SAT model over the whole
instance gets with a long budget: its best plan and CP-SAT's own proven bound (the
objective is the GPU count only). The CP-SAT bound is a bound on the integer model
(loads rounded up), so it is below the optimum of that model, not necessarily of the
float problem; it tells how far from optimal the plans are.

    .venv/bin/python benchmarks/bench_pack_gap.py --n 100 --limit 10 --cpsat-seconds 300
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from tidal_workloads import field_mix  # noqa: E402

from gsched.models import Cluster, Node  # noqa: E402
from gsched.scheduler.packing.bounds import compute_bounds  # noqa: E402
from gsched.scheduler.packing.cpsat import _price_units, build_model, solve_model  # noqa: E402
from gsched.scheduler.packing.pack import pack_problem  # noqa: E402
from gsched.scheduler.packing.plan import check_plan  # noqa: E402
from gsched.scheduler.packing.problem import build_problem  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=float, default=10.0, help="pack's --time-limit")
    ap.add_argument("--cpsat-seconds", type=float, default=300.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--single-gpu", action="store_true",
                    help="drop multi-GPU workloads (lets the model break GPU symmetry)")
    ap.add_argument("--feasible", type=int, default=0,
                    help="instead: can this many GPUs hold everything? (CP-SAT, no objective)")
    args = ap.parse_args()
    wl = field_mix(args.n, seed=args.seed)
    if args.single_gpu:
        wl = [w for w in wl if w.num_gpu == 1]
    nodes = -(-int(args.n * 0.75) // 8) + 1
    cl = Cluster(nodes=[Node(name=f"a100-{j}", gpu_count=8, gpu_model="A100")
                        for j in range(nodes)])
    prob = build_problem(wl, cl, 0.1)
    t = time.perf_counter()
    b = compute_bounds(prob)
    print(f"workloads {prob.n_items}  GPUs in cluster {prob.n_gpus}")
    print(f"bounds (no box, {time.perf_counter() - t:.1f} s): {b.values}  best {b.best}")
    plan, assignment = pack_problem(prob, time_limit=args.limit, seed=args.seed)
    assert not check_plan(prob, assignment)
    print(f"pack --time-limit {args.limit:g}: {plan.gpus_used} GPUs "
          f"(greedy {plan.greedy_gpus}, status {plan.status}, stopped by {plan.stopped_by})",
          flush=True)
    hint = {prob.ids.index(w): prob.gpu_of(node, gpus) for w, (node, gpus) in assignment.items()}
    items = list(range(prob.n_items))
    g = args.feasible or prob.n_gpus
    z = np.zeros(g, dtype=np.int64)
    sub = build_model(prob, items, list(range(g)), np.zeros((g, prob.slots), dtype=np.int64),
                      z, z.astype(bool), z.astype(bool), hint=None if args.feasible else hint,
                      secondary=False, objective=not args.feasible)
    t = time.perf_counter()
    if args.feasible:
        res = solve_model(sub, prob, args.cpsat_seconds, seed=args.seed, workers=args.workers)
        print(f"CP-SAT, {args.workers} workers, {time.perf_counter() - t:.0f} s: can "
              f"{g} GPUs hold all {prob.n_items}? {res.status}")
        return
    res = solve_model(sub, prob, args.cpsat_seconds, seed=args.seed, workers=args.workers)
    unit = sub.weight * int(_price_units(prob)[0])
    print(f"full CP-SAT, {args.workers} workers, {time.perf_counter() - t:.0f} s: "
          f"status {res.status}, plan {res.objective / unit if res.objective else None}"
          f" GPUs, proven bound {res.bound / unit if res.bound else None}", flush=True)


if __name__ == "__main__":
    main()
