"""Packing quality and solve time of the tidal packer (`gsched.scheduler.packing`).

Default (`--mix field`): `gsched pack` itself, run as a subprocess on a trace made from
every real curve in ../shared/traces (tidal_workloads.field_rows: GenAI duty cycles,
GenAI QPS, GenAI LoRA request load, ServeGen clients; GPU memory that binds on 80 GB
A100s), `--repeat` times per size with one seed. Per size: the command's wall time
against --time-limit (process start to exit) and its CPU time (what the wall time
would be on an idle machine, one worker), whether the repeats wrote byte-identical
JSON, GPUs, every bound, the gap to the best sound bound, the savings; every plan is
re-checked (`check_plan`) and every bound asserted <= the plan.

    .venv/bin/python benchmarks/bench_pack.py --sizes 1000,5000,10000 --limits 10,30,60

The older in-process mixes (`--mix tidal,inference`) follow.

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


def run_cli(n: int, limit: float, seed: int, repeat: int, workdir: Path) -> dict:
    """`gsched pack` on the field mix of `n` workloads, `repeat` times; checked."""
    import json
    import subprocess

    from tidal_workloads import field_rows, write_field_trace

    from gsched.scheduler.packing.problem import Workload
    from gsched.traces.cluster import load_cluster
    from gsched.traces.load import load_trace

    d = workdir / f"n{n}"
    d.mkdir(parents=True, exist_ok=True)
    trace = write_field_trace(field_rows(n, seed=seed), d)
    nodes = -(-int(n * 0.75) // 8) + 1
    (d / "cluster.yaml").write_text(f"nodes:\n  - name: a100\n    count: {nodes}\n"
                                    f"    gpu_count: 8\n    gpu_model: A100\n")
    gsched = str(Path(sys.executable).with_name("gsched"))
    import resource

    walls, cpus, blobs = [], [], []
    for k in range(repeat):
        out = d / f"plan{k}.json"
        t0 = time.perf_counter()
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([gsched, "pack", str(trace), "--cluster", str(d / "cluster.yaml"),
                        "--time-limit", str(limit), "--seed", str(seed), "--json", str(out),
                        "-q"], check=True)
        walls.append(time.perf_counter() - t0)
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime)
        blobs.append(out.read_bytes())
    plan = json.loads(blobs[0])
    tr = load_trace(trace)
    prob = build_problem([Workload.from_job(j, tr.slots) for j in tr.jobs],
                         load_cluster(d / "cluster.yaml"), 0.1, tr.slots)
    for blob in blobs:
        p = json.loads(blob)
        errors = check_plan(prob, {a["workload"]: (a["node"], a["gpus"])
                                   for a in p["assignments"]})
        assert not errors, errors[:3]
        worst = max(v for v in p["bounds"].values() if v is not None)
        assert worst <= p["gpus_used"], "a bound exceeds a plan"
    return {"n": n, "limit": limit, "walls": walls, "cpus": cpus, "identical": len(set(blobs)) == 1,
            "plan": plan}


def determinism(args: argparse.Namespace) -> None:
    """The packer in-process, twice per size, with the wall-clock guard an hour away: the
    deterministic budget alone stops it. Prints the CPU seconds each run took (what the
    wall time is on an idle machine) and whether the two plans are byte-identical."""
    from tidal_workloads import field_mix

    from gsched.models import Cluster, Node

    limits = [float(x) for x in args.limits.split(",")] if args.limits else None
    print(f"{'workloads':>9}{'limit':>7}{'cpu s (2 runs)':>16}{'identical':>11}{'GPUs':>7}"
          f"  stopped by")
    for k, n in enumerate(int(x) for x in args.sizes.split(",")):
        limit = limits[k] if limits else args.time_limit
        nodes = -(-int(n * 0.75) // 8) + 1
        cl = Cluster(nodes=[Node(name=f"a100-{j}", gpu_count=8, gpu_model="A100")
                            for j in range(nodes)])
        blobs, cpus = [], []
        for _ in range(2):
            prob = build_problem(field_mix(n, seed=args.seed), cl, args.headroom)
            c0 = time.process_time()
            plan, _ = pack_problem(prob, time_limit=limit, seed=args.seed,
                                   deadline=time.perf_counter() + 3600,
                                   overhead=1.0 + 0.5 + 5e-4 * n)  # as the CLI estimates
            cpus.append(time.process_time() - c0)
            blobs.append(plan.model_dump_json())
        print(f"{n:>9,}{limit:>7g}{cpus[0]:>8.1f}{cpus[1]:>8.1f}"
              f"{'yes' if blobs[0] == blobs[1] else 'NO':>11}{plan.gpus_used:>7,}"
              f"  {plan.stopped_by}", flush=True)


def main_field(args: argparse.Namespace) -> None:
    import tempfile

    limits = [float(x) for x in args.limits.split(",")] if args.limits else None
    sizes = [int(x) for x in args.sizes.split(",")]
    head = (f"{'workloads':>9}{'limit':>6}{'wall':>13}{'cpu':>11}{'same':>5}{'GPUs':>6}{'load':>6}"
            f"{'mem':>6}{'whole':>6}{'model':>6}{'clique':>7}{'LP':>6}  {'best (binding)':<16}"
            f"{'gap':>6}{'vs peak':>8}{'vs req':>7}  stopped by")
    print(head)
    print("-" * len(head))
    with tempfile.TemporaryDirectory() as tmp:
        for k, n in enumerate(sizes):
            limit = limits[k] if limits else args.time_limit
            r = run_cli(n, limit, args.seed, args.repeat, Path(tmp))
            p, b = r["plan"], r["plan"]["bounds"]

            def f(v: int | None) -> str:
                return "cut" if v is None else f"{v:,}"

            walls = "/".join(f"{w:.1f}" for w in r["walls"])
            cpus = "/".join(f"{w:.1f}" for w in r["cpus"])
            print(f"{n:>9,}{limit:>6g}{walls:>13}{cpus:>11}{'yes' if r['identical'] else 'NO':>5}"
                  f"{p['gpus_used']:>6,}{f(b['load']):>6}{f(b['memory']):>6}"
                  f"{f(b['whole_gpu']):>6}{f(b['models']):>6}{f(b['clique']):>7}"
                  f"{f(b['lp']):>6}  {p['lower_bound']:>5,} ({p['binding_bound']:<8})"
                  f"{p['gap']:>6.1%}{p['saving']['vs_peak_reservation']:>8.1%}"
                  f"{p['saving']['vs_request_booking']:>7.1%}  {p['stopped_by']}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1000,5000,10000")
    ap.add_argument("--mixes", default="field")
    ap.add_argument("--time-limit", type=float, default=10.0)
    ap.add_argument("--limits", default="", help="field mix: one time limit per size")
    ap.add_argument("--repeat", type=int, default=2, help="field mix: runs per size")
    ap.add_argument("--headroom", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--determinism", action="store_true",
                    help="field mix in-process, wall guard off: CPU time and identical plans")
    args = ap.parse_args()
    if args.determinism:
        determinism(args)
        return
    if args.mixes == "field":
        main_field(args)
        return
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
