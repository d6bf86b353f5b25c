"""The extender's own CPU time per verb at scale, in-process (no HTTP, no load generator).

Builds the state `bench_extender.py` serves (8-GPU nodes, half the GPUs holding two
quarter-GPU inference pods with daily profiles, restored from a store), then plays
kube-scheduler through the server's request handler (`App.handle`: decoding, the verb,
encoding, metrics) for each new pod: filter over every node, prioritize over those that
passed, bind to the best. Reports per verb the p50 / p99 / mean of the handling thread's
CPU time (`time.thread_time`, so other processes on a busy machine inflate it less than
wall time), and the filter + prioritize CPU per pod, whose inverse bounds the requests/s
one core can serve. `--profile` adds the top functions by own time (cProfile).

Run: .venv/bin/python benchmarks/profile_extender.py [--nodes 10000] [--policy tidal]
     [--pods 200] [--profile] [--no-bind]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).parent))
import bench_extender as be  # noqa: E402

from gsched.scheduler.extender.metrics import SchedulerMetrics  # noqa: E402
from gsched.scheduler.extender.server import App, ServerConfig  # noqa: E402
from gsched.scheduler.extender.store import Store  # noqa: E402
from gsched.scheduler.extender.verbs import Extender  # noqa: E402
from gsched.scheduler.policies.registry import make_policy  # noqa: E402
from gsched.traces.cluster import load_cluster  # noqa: E402

HEADERS = {"Content-Type": "application/json"}


def play(app: App, pods: list[dict], names: list[str], cpu: dict[str, list[float]],
         bind: bool = True) -> None:
    for pod in pods:
        body = orjson.dumps({"Pod": pod, "Nodes": None, "NodeNames": names})
        t = time.thread_time()
        r = app.handle("POST", "/filter", HEADERS, body)
        cpu["filter"].append(time.thread_time() - t)
        passed = orjson.loads(r.body)["NodeNames"]
        if not bind:  # the throughput test's shape: prioritize over every node, no bind
            t = time.thread_time()
            app.handle("POST", "/prioritize", HEADERS, body)
            cpu["prioritize"].append(time.thread_time() - t)
            continue
        if len(passed) > 1:
            pb = body if len(passed) == len(names) else orjson.dumps(
                {"Pod": pod, "Nodes": None, "NodeNames": passed})
            t = time.thread_time()
            r = app.handle("POST", "/prioritize", HEADERS, pb)
            cpu["prioritize"].append(time.thread_time() - t)
            best = be.best_host(r.body)
        else:
            best = passed[0]
        meta = pod["metadata"]
        bb = orjson.dumps({"PodName": meta["name"], "PodNamespace": meta["namespace"],
                           "PodUID": meta["uid"], "Node": best})
        t = time.thread_time()
        app.handle("POST", "/bind", HEADERS, bb)
        cpu["bind"].append(time.thread_time() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=10_000)
    ap.add_argument("--policy", default="tidal")
    ap.add_argument("--pods", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--no-bind", action="store_true",
                    help="the throughput test's shape: filter, then prioritize over every "
                         "node, no bind (the state never changes)")
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    with tempfile.TemporaryDirectory() as d:
        db = Path(d) / "gsched.db"
        be.preload(db, a.nodes, rng)
        ext = Extender(load_cluster(be.write_cluster(Path(d), a.nodes)),
                       make_policy(a.policy), store=Store(db))
        ext.restore_from_store()
        app = App(ext, SchedulerMetrics(), ServerConfig(max_body_bytes=1 << 30))
        names = [f"gpu-node-{i}" for i in range(a.nodes)]
        pods = [be.k8s_pod(i, rng) for i in range(a.pods + 20)]
        gc.collect()
        gc.freeze()  # as `gsched serve` does after start
        gc.set_threshold(50_000, 20, 100)
        play(app, pods[:20], names, {"filter": [], "prioritize": [], "bind": []})  # warm-up
        cpu: dict[str, list[float]] = {"filter": [], "prioritize": [], "bind": []}
        prof = cProfile.Profile() if a.profile else None
        if prof:
            prof.enable()
        play(app, pods[20:], names, cpu, bind=not a.no_bind)
        if prof:
            prof.disable()
    print(f"{a.nodes:,} nodes, policy {a.policy}, {a.pods} pods; load average "
          f"{os.getloadavg()[0]:.1f}\n")
    print("| verb | CPU p50 (ms) | p99 (ms) | mean (ms) |")
    print("| --- | ---: | ---: | ---: |")
    for verb, xs in cpu.items():
        if not xs:
            continue
        ms = np.array(xs) * 1e3
        print(f"| {verb} | {np.percentile(ms, 50):.2f} | {np.percentile(ms, 99):.2f} | "
              f"{ms.mean():.2f} |")
    pair = (sum(cpu["filter"]) + sum(cpu["prioritize"])) / a.pods * 1e3
    print(f"\nfilter + prioritize: {pair:.2f} ms of CPU per pod, at most "
          f"{2 * 1e3 / pair:,.0f} of these requests/s on one core")
    if prof:
        print()
        order, top = os.environ.get("PSORT", "tottime"), int(os.environ.get("PTOP", "20"))
        pstats.Stats(prof).sort_stats(order).print_stats(top)


if __name__ == "__main__":
    main()
