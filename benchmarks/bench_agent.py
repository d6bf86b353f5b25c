"""Node agent cost and scheduler ingestion throughput.

Agent: one node of 8 GPUs with a pod on each, NVML faked at the pynvml boundary (the
fake answers instantly, so this measures the agent's own work: NVML result handling,
cgroup reads, pod attribution, exporter, report building, the SQLite queue).

- per sample: `Agent.step()` in a tight loop, CPU time per call (a report queued every
  10th call, as at 1 Hz with 10 s reports), plus one `/metrics` render per 15 samples;
- live: the real agent (sampler, sender and /metrics threads) at 1 Hz for `--seconds`,
  process CPU time over wall time, with reports pushed to a loopback ingestion endpoint;
- memory: peak RSS of the process after the agent runs.

Ingestion: `IngestService.handle` on pre-serialised reports from 1,000 simulated nodes
(8 GPUs, 8 pods, 10 samples each: 160 samples per report), into an on-disk history with
`synchronous=FULL` (what `gsched serve` uses), from one thread and from 16 (as request
threads of the HTTP server: concurrent reports share one group commit). 1,000 agents
reporting every 10 s need 100 reports/s.

    .venv/bin/python benchmarks/bench_agent.py [--samples 3000] [--seconds 30] [--reports 3000]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from fake_nvml import eight_gpu_node  # noqa: E402
from prometheus_client import generate_latest  # noqa: E402

from gsched.agents.agent import Agent, AgentConfig  # noqa: E402
from gsched.agents.model import GpuReading, NodeSample, PodUsage  # noqa: E402
from gsched.agents.nvml import NvmlSource  # noqa: E402
from gsched.agents.pods import PodAttributor, PodDirectory, PodInfo  # noqa: E402
from gsched.agents.reporter import ReportBuilder  # noqa: E402
from gsched.scheduler.extender.history import UsageHistory  # noqa: E402
from gsched.scheduler.extender.ingest import IngestService  # noqa: E402
from gsched.scheduler.extender.metrics import SchedulerMetrics  # noqa: E402


def fake_node(workdir: Path) -> NvmlSource:
    fake = eight_gpu_node().install_permanently()
    proc = workdir / "proc"
    pods = []
    for g in fake.gpus:
        for p in g.processes:
            uid = f"00000000-0000-0000-0000-{p.pid:012d}"
            cid = f"{p.pid:064x}"
            (proc / str(p.pid)).mkdir(parents=True)
            (proc / str(p.pid) / "cgroup").write_text(
                f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"
                f"{uid.replace('-', '_')}.slice/cri-containerd-{cid}.scope\n")
            pods.append(PodInfo(namespace="bench", name=f"svc-{p.pid}", uid=uid,
                                containers={cid: "main"}))
    return NvmlSource("bench-node", attributor=PodAttributor(PodDirectory(lambda: pods), proc))


def bench_agent_per_sample(n: int, workdir: Path) -> dict:
    src = fake_node(workdir)
    agent = Agent(src, AgentConfig(node="bench-node", port=None, report_every=10,
                                   scheduler="http://127.0.0.1:9", queue_dir=workdir / "q1",
                                   queue_max=1_000_000))
    src.open()
    for _ in range(50):  # warm caches (pod lookups, pydantic)
        agent.step()
    c0, w0 = time.process_time(), time.perf_counter()
    for i in range(n):
        agent.step()
        if i % 15 == 0:
            generate_latest(agent.exporter.registry)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    agent.queue.close()
    return {"samples": n, "cpu_ms_per_sample": 1000 * cpu / n, "wall_ms_per_sample":
            1000 * wall / n, "core_share_at_1hz": cpu / n}


class _Sink:
    """A loopback ingestion endpoint for the live run."""

    def __init__(self, service: IngestService) -> None:
        class H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status, ans = service.handle(body, dict(self.headers.items()))
                out = json.dumps(ans).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *a: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"


def bench_agent_live(seconds: float, workdir: Path) -> dict:
    src = fake_node(workdir / "live")
    sink = _Sink(IngestService(UsageHistory(), SchedulerMetrics(), None))
    agent = Agent(src, AgentConfig(node="bench-node", interval_s=1.0, report_every=10,
                                   port=0, host="127.0.0.1", scheduler=sink.url,
                                   queue_dir=workdir / "q2"))
    # The ingestion endpoint runs in this process too: count only the agent's threads
    # (sampler and sender; the /metrics server idles unless scraped).
    agent.start()
    time.sleep(2)
    ids = {t.ident for t in agent._threads}

    def agent_cpu() -> float:
        total = 0.0
        for tid in ids:
            try:
                total += time.clock_gettime(time.pthread_getcpuclockid(tid))
            except (OSError, AttributeError):
                pass
        return total

    c0, w0 = agent_cpu(), time.perf_counter()
    p0 = time.process_time()
    time.sleep(seconds)
    cpu, wall = agent_cpu() - c0, time.perf_counter() - w0
    proc_cpu = time.process_time() - p0
    agent.stop(final_flush_timeout_s=0.5)
    sink.server.shutdown()
    return {"seconds": round(wall, 1), "agent_threads_cpu_s": cpu,
            "agent_core_share": cpu / wall, "process_core_share": proc_cpu / wall}


def make_reports(n: int, nodes: int = 1000, gpus: int = 8, per_report: int = 10) -> list[bytes]:
    out = []
    builders = [ReportBuilder(f"node-{i:04d}") for i in range(nodes)]
    t = 1.7e9
    for k in range(n):
        b = builders[k % nodes]
        for s in range(per_report):
            ts = t + (k // nodes) * per_report + s
            gs = tuple(GpuReading(index=g, uuid=f"GPU-{k % nodes}-{g}", name="A100",
                                  util_pct=float((g * 7 + s) % 100), mem_used_mib=1000.0 + g,
                                  mem_total_mib=81920.0) for g in range(gpus))
            ps = tuple(PodUsage(namespace="ns", pod=f"p-{k % nodes}-{g}",
                                workload=f"ns/w-{(k % nodes) * gpus + g}", gpu_index=g,
                                gpu_uuid=f"GPU-{k % nodes}-{g}", util_pct=float((g + s) % 100),
                                mem_used_mib=500.0) for g in range(gpus))
            b.add(NodeSample(timestamp=ts, node=b.node, gpus=gs, pods=ps))
        out.append(b.build(now=t).model_dump_json(exclude_none=True).encode())
    return out


def bench_ingest(n: int, workdir: Path, durable: bool, resolution_s: float,
                 threads: int) -> dict:
    bodies = make_reports(n)
    history = UsageHistory(workdir / f"h-{durable}-{resolution_s}-{threads}.sqlite",
                           durable=durable,
                           resolution_s=resolution_s)
    svc = IngestService(history, SchedulerMetrics(), "tok")
    headers: Mapping[str, str] = {"Authorization": "Bearer tok"}

    def work(part: list[bytes]) -> None:
        for b in part:
            status, _ = svc.handle(b, headers)
            assert status == 200

    t0 = time.perf_counter()
    if threads == 1:
        work(bodies)
    else:
        pool = [threading.Thread(target=work, args=(bodies[i::threads],))
                for i in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
    wall = time.perf_counter() - t0
    counts = svc.history.counts()
    t1 = time.perf_counter()
    learned = svc.refresh_profiles()
    learn_s = time.perf_counter() - t1
    return {"reports": n, "durable": durable, "reports_per_s": n / wall,
            "samples_per_s": (counts["usage_samples"] + counts["usage_gpu_samples"]) / wall,
            "bytes_per_report": sum(map(len, bodies)) // n,
            "agents_at_10s_supported": int(10 * n / wall),
            "profile_refresh_s": learn_s, "workloads": len(learned)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=3000)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--reports", type=int, default=3000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        per = bench_agent_per_sample(args.samples, work / "a")
        print(f"agent, per sample (8 GPUs, 8 pods): {per['cpu_ms_per_sample']:.3f} ms CPU "
              f"({per['wall_ms_per_sample']:.3f} ms wall) -> {100 * per['core_share_at_1hz']:.3f}"
              f"% of one core at 1 Hz")
        live = bench_agent_live(args.seconds, work / "b")
        print(f"agent, live at 1 Hz for {live['seconds']} s: agent threads "
              f"{100 * live['agent_core_share']:.3f}% of one core (whole process "
              f"{100 * live['process_core_share']:.3f}%)")
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"agent process peak RSS: {rss:.0f} MiB")
        for durable, res, threads in ((True, 0.0, 1), (True, 0.0, 16), (False, 0.0, 1),
                                      (True, 60.0, 16)):
            ing = bench_ingest(args.reports, work / "c", durable, res, threads)
            print(f"ingestion ({'synchronous=FULL' if durable else 'synchronous=NORMAL'}, "
                  f"{'every sample' if res == 0 else f'{res:g} s buckets'}, {threads} "
                  f"thread{'s' if threads > 1 else ''}): "
                  f"{ing['reports_per_s']:.0f} reports/s, {ing['samples_per_s']:.0f} rows/s, "
                  f"{ing['bytes_per_report']} B/report -> {ing['agents_at_10s_supported']} "
                  f"agents at one report per 10 s; profile refresh of {ing['workloads']} "
                  f"workloads: {ing['profile_refresh_s']:.2f} s")

if __name__ == "__main__":
    main()
