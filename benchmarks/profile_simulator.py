"""Where the simulator's time goes: one synthetic replay under cProfile, by component.

Components are the inclusive time of the functions that own each job of the engine
(so they overlap where one calls another: `_start` includes the state's `allocate` and
the accounting). cProfile roughly doubles the run time; the shares are what matter.

Run: .venv/bin/python benchmarks/profile_simulator.py [--jobs 100000] [--policy binpack]
Prints a markdown table; docs/benchmarks.md holds the last run.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import time

from gsched.models import Cluster, Node
from gsched.scheduler.policies.policy import PolicyConfig
from gsched.scheduler.policies.registry import make_policy
from gsched.simulator.engine import simulate
from gsched.traces.synthetic import SyntheticSpec, generate

#: (label, file suffix, function name): inclusive time of each.
COMPONENTS = [
    ("queue passes (place + start)", "simulator/engine.py", "_schedule_pass"),
    ("  policy decision (`place`)", "policies/policy.py", "place"),
    ("    feasibility (`fit_mask`)", "policies/state.py", "fit_mask"),
    ("    score", None, "score"),
    ("    GPU choice (`choose_gpus`)", None, "choose_gpus"),
    ("  retry pre-check (`may_fit`)", "simulator/retry.py", "may_fit"),
    ("  start a job (`_start`)", "simulator/engine.py", "_start"),
    ("priority preemption (`_try_preempt`)", "simulator/engine.py", "_try_preempt"),
    ("  victim search (`find_victims`)", "policies/preemption.py", "find_victims"),
    ("finish a job (`_stop`)", "simulator/engine.py", "_stop"),
    ("state mutation (`allocate` + `release`)", "policies/state.py", ("allocate", "release")),
    ("  compiled row update (`book`, `unbook`)", "policies/state_kernels.py",
     ("book", "unbook")),
    ("accounting (`before/after_change`, `advance`)", "simulator/accounting.py",
     ("before_change", "after_change", "advance")),
    ("  compiled (`contribution`, `after_change`, `integrate`)",
     "simulator/accounting_kernels.py", ("contribution", "after_change", "integrate")),
    ("re-rating colocated training (`_update_rates`)", "simulator/engine.py", "_update_rates"),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--policy", default="binpack")
    ap.add_argument("--nodes", type=int, default=400)
    args = ap.parse_args()
    cl = Cluster(nodes=[Node(name=f"n{i:04d}", gpu_count=8, gpu_model="A100")
                        for i in range(args.nodes)])
    tr = generate(SyntheticSpec(jobs=args.jobs, jobs_per_day=20_000, seed=0))
    policy = make_policy(args.policy, PolicyConfig(workload=tr.jobs))
    prof = cProfile.Profile()
    c0 = time.process_time()
    prof.enable()
    result = simulate(tr, cl, policy)
    prof.disable()
    cpu = time.process_time() - c0
    stats = pstats.Stats(prof).stats  # {(file, line, name): (cc, nc, tt, ct, callers)}
    total = sum(v[3] for k, v in stats.items() if k[2] == "run" and "engine.py" in k[0])

    def inclusive(suffix: str | None, names: str | tuple[str, ...]) -> tuple[float, int]:
        names = (names,) if isinstance(names, str) else names
        ct = calls = 0
        for (file, _, name), v in stats.items():
            if name in names and (suffix is None or file.endswith(suffix)) and "gsched" in file:
                ct += v[3]
                calls += v[1]
        return ct, calls

    f = result.figures
    print(f"{args.jobs:,} jobs, {args.policy}, {args.nodes * 8:,} GPUs: {f['events']:,} "
          f"events, {f['preemptions']:,} preemptions; {cpu:.1f} s CPU under cProfile "
          f"(load average {os.getloadavg()[0]:.1f})\n")
    print("| component | share of run | calls |")
    print("| --- | ---: | ---: |")
    for label, suffix, names in COMPONENTS:
        ct, calls = inclusive(suffix, names)
        print(f"| {label} | {ct / total:.0%} | {calls:,} |")


if __name__ == "__main__":
    main()
