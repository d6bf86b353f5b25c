"""The parity trace: 40 pods of mixed kinds, in order, some finishing.

A plan is a sequence of steps, each an arrival or a finish; it fixes *what* happens in
which order. Its times come from the real run (the wall-clock moment each pod was
created or deleted), so the simulator sees the same time of day as the extender did:
tidal's forecast window starts at the current quarter-hour.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

NODES = [(f"parity-{i}", 8) for i in range(4)]
NODE_CPU, NODE_MEMORY = "64", "512Gi"  # 64000 millicores, 524288 MiB in the cluster file
PROFILES = {
    "day": "0.1;0.1;0.2;0.6;0.9;0.8;0.5;0.2",
    "night": "0.8;0.9;0.6;0.2;0.1;0.1;0.3;0.6",
    "evening": "0.3;0.2;0.1;0.1;0.3;0.5;0.9;0.7",
}


@dataclass(frozen=True)
class PlanJob:
    name: str
    kind: str          # training | inference
    gpus: int          # whole GPUs (nvidia.com/gpu), 0 for a share
    milli: int         # gsched.io/gpu-milli for a share, else 0
    profile: str | None


def make_plan(seed: int = 7, n: int = 40) -> tuple[list[PlanJob], list[tuple[str, str]]]:
    """Jobs, and the steps: ("arrive" | "finish", job name), in order."""
    rng = np.random.default_rng(seed)
    jobs: list[PlanJob] = []
    finish_after: dict[int, list[str]] = {}
    for i in range(n):
        if i == n - 3:  # late, and only fits if the earlier pods were packed
            job = PlanJob(f"j{i:02d}-train8", "training", 8, 0, None)
            life = None
        elif i % 3 == 0:
            shape = str(rng.choice(list(PROFILES)))
            milli = int(rng.choice([250, 500]))
            job = PlanJob(f"j{i:02d}-infer", "inference", 0, milli, PROFILES[shape])
            life = int(rng.integers(4, 16)) if rng.random() < 0.4 else None
        else:
            gpus = int(rng.choice([1, 1, 1, 2, 4]))
            job = PlanJob(f"j{i:02d}-train{gpus}", "training", gpus, 0, None)
            life = int(rng.integers(2, 9)) if rng.random() < 0.8 else None
        jobs.append(job)
        if life is not None:
            finish_after.setdefault(i + life, []).append(job.name)
    steps: list[tuple[str, str]] = []
    for i, job in enumerate(jobs):
        steps.append(("arrive", job.name))
        steps += [("finish", name) for name in finish_after.get(i, [])]
    return jobs, steps


def write_cluster(path: Path) -> Path:
    lines = ["nodes:"]
    for name, gpus in NODES:
        lines += [f"  - name: {name}", f"    gpu_count: {gpus}", "    gpu_model: A100",
                  "    cpu_milli: 64000", "    memory_mib: 524288"]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_trace(path: Path, jobs: list[PlanJob], created: dict[str, float],
                deleted: dict[str, float]) -> Path:
    """The plan as a native trace, with the real run's times. Pods that were never
    deleted run on: inference to the end, training far beyond it."""
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "kind", "submit_time", "duration", "num_gpu", "gpu_share",
                    "priority", "preemptible", "profile"])
        for job in sorted(jobs, key=lambda j: created[j.name]):
            t0 = created[job.name]
            if job.name in deleted:
                dur = repr(deleted[job.name] - t0)
            else:
                dur = "" if job.kind == "inference" else "1000000"
            num, share = (job.gpus, 1) if job.gpus else (1, job.milli / 1000)
            w.writerow([job.name, job.kind, repr(t0), dur, num, share, 0,
                        "true" if job.kind == "training" else "false", job.profile or ""])
    return path


def first_starts(placements_csv: Path, policy: str) -> tuple[dict, list[str]]:
    """{job: (node, sorted GPUs)} of each job's first start, and the jobs the simulator
    stopped (in order)."""
    starts: dict[str, tuple[str, tuple[int, ...]]] = {}
    stops: list[str] = []
    with placements_csv.open() as f:
        for row in csv.DictReader(f):
            if row["policy"] != policy:
                continue
            if row["event"] == "start" and row["job"] not in starts:
                gpus = tuple(sorted(int(g) for g in row["gpus"].split(";") if g))
                starts[row["job"]] = (row["node"], gpus)
            elif row["event"] == "stop":
                stops.append(row["job"])
    return starts, stops
