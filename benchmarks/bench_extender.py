"""Scheduler-extender latency and throughput, from a load generator on loopback.

For clusters of 1,000, 5,000 and 10,000 eight-GPU nodes, a real `gsched serve --cluster`
process (static inventory) is started on 127.0.0.1 with half the GPUs already holding
shared inference pods with 96-slot daily profiles (restored from its store, as after a
restart). This process then plays kube-scheduler: for each new pod, POST filter, then
prioritize, then bind to the best node, over one keep-alive connection, with requests
built as kube-scheduler builds them (Go field names; Pod and NodeList serialised by the
`kubernetes` client). Pods alternate between shared inference (0.25-0.5 GPU, 96-slot
profile) and whole-GPU training (1-2 GPUs).

- nodeCacheCapable: `NodeNames` (every node) - the mode gsched's manifests use;
- Nodes: whole `v1.Node` objects (every node), far bigger requests.

Reported per verb: p50/p99 latency (ms, client side, request written to answer read,
with a lean socket client) and requests/s over the whole closed loop (filter +
prioritize + bind); then the peak filter+prioritize requests/s with `--connections`
client processes (each its own keep-alive connection and its own `--tput-pods` pods,
requests encoded up front, answers read but not decoded), and the CPU the server and
those clients used meanwhile (cores), so that the server's rate per core can be read off
on a busy machine.

Run: .venv/bin/python benchmarks/bench_extender.py [--nodes 1000,5000,10000]
     [--policies tidal,binpack] [--pods 300] [--nocache-pods 20] [--connections 4]
     [--tput-pods 100]
Bounded loops only; loopback only. Prints markdown; docs/benchmarks.md holds a run.
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from kubernetes import client

from gsched.models import Job
from gsched.scheduler.extender.store import Assignment, Store
from gsched.scheduler.extender.verbs import job_to_json

API = client.ApiClient()
SLOTS = 96


def profile(rng: np.random.Generator, level: float) -> np.ndarray:
    t = np.arange(SLOTS) / SLOTS
    phase = rng.random()
    return np.clip(level * (0.55 + 0.45 * np.cos(2 * np.pi * (t - phase))), 0.0, 1.0)


def write_cluster(d: Path, nodes: int) -> Path:
    path = d / "cluster.yaml"
    path.write_text(f"nodes:\n  - name: gpu-node\n    count: {nodes}\n    gpu_count: 8\n"
                    f"    gpu_model: A100\n    cpu_milli: 128000\n    memory_mib: 1048576\n")
    return path


def preload(db: Path, nodes: int, rng: np.random.Generator) -> int:
    """Half the GPUs hold two quarter-GPU inference pods each (restored at start)."""
    store = Store(db)
    batch = []
    for i in range(nodes):
        for g in range(4):
            for k in range(2):
                job = Job(id=f"pre-{i}-{g}-{k}", kind="inference", submit_time=0, num_gpu=1,
                          gpu_share=0.25, profile=profile(rng, 0.8), cpu_milli=2000,
                          memory_mib=8192)
                batch.append(Assignment(uid=job.id, namespace="bench", name=job.id,
                                        node=f"gpu-node-{i}", gpus=(g,), share=0.25,
                                        job=job_to_json(job), bound_at=0.0))
    store.record_many(batch)
    store.close()
    return len(batch)


def k8s_pod(i: int, rng: np.random.Generator) -> dict:
    if i % 2 == 0:
        milli = int(rng.choice([250, 500]))
        ann = {"gsched.io/kind": "inference",
               "gsched.io/profile": ";".join(f"{x:.3f}" for x in profile(rng, 0.9))}
        req = {"gsched.io/gpu-milli": str(milli)}
    else:
        ann = {"gsched.io/kind": "training"}
        req = {"nvidia.com/gpu": str(int(rng.integers(1, 3)))}
    pod = client.V1Pod(
        api_version="v1", kind="Pod",
        metadata=client.V1ObjectMeta(name=f"bench-{i}", namespace="bench", uid=f"uid-{i}",
                                     resource_version=str(1000 + i), annotations=ann,
                                     labels={"app": f"bench-{i % 7}"}),
        spec=client.V1PodSpec(scheduler_name="gsched", priority=0, containers=[
            client.V1Container(name="main", image="registry.example/model-server:1.4",
                               resources=client.V1ResourceRequirements(
                                   requests={**req, "cpu": "2", "memory": "8Gi"},
                                   limits=req))]))
    return API.sanitize_for_serialization(pod)


def k8s_nodes(nodes: int) -> dict:
    items = []
    for i in range(nodes):
        res = {"cpu": "128", "memory": "1Ti", "nvidia.com/gpu": "8", "pods": "110",
               "ephemeral-storage": "900Gi"}
        items.append(client.V1Node(
            api_version="v1", kind="Node",
            metadata=client.V1ObjectMeta(name=f"gpu-node-{i}", labels={
                "kubernetes.io/hostname": f"gpu-node-{i}", "kubernetes.io/os": "linux",
                "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB", "nvidia.com/gpu.count": "8",
                "topology.kubernetes.io/zone": f"zone-{i % 3}"}),
            status=client.V1NodeStatus(capacity=res, allocatable=res, conditions=[
                client.V1NodeCondition(type="Ready", status="True")])))
    return API.sanitize_for_serialization(client.V1NodeList(items=items))


class Served:
    """`gsched serve --cluster` in a subprocess on 127.0.0.1, any free port."""

    def __init__(self, cluster: Path, db: Path, policy: str) -> None:
        cmd = [sys.executable, "-m", "gsched", "serve", "--cluster", str(cluster),
               "--db", str(db), "--host", "127.0.0.1", "--port", "0", "--policy", policy,
               "--log-level", "warning", "--max-body-mib", "256"]
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
        line = self.proc.stderr.readline()
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
        if not m:
            self.proc.kill()
            raise RuntimeError(f"gsched serve did not start: {line}")
        self.port = int(m.group(1))
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()

    def cpu_seconds(self) -> float:
        """CPU time the server process has used (user + system)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


class Conn:
    """One keep-alive HTTP/1.1 connection with a lean client (a socket, the request line
    and three headers written at once, the answer read by its Content-Length), so that
    the client's own parsing is not counted as the server's latency."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=120)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    @staticmethod
    def encode(path: str, body: bytes) -> bytes:
        return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
                f"\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body

    def send(self, request: bytes) -> tuple[int, bytes]:
        """Write a pre-encoded request; (status, body) of the answer."""
        self.sock.sendall(request)
        buf = self.buf
        while (end := buf.find(b"\r\n\r\n")) < 0:
            buf += self._recv()
        head, rest = buf[:end], buf[end + 4:]
        status = int(head[9:12])
        m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
        length = int(m.group(1)) if m else 0
        chunks, have = [rest], len(rest)
        while have < length:
            chunk = self._recv()
            chunks.append(chunk)
            have += len(chunk)
        data = b"".join(chunks)
        self.buf = data[length:]
        return status, data[:length]

    def _recv(self) -> bytes:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise RuntimeError("the server closed the connection")
        return chunk

    def post(self, path: str, body: bytes, parse: bool = True) -> tuple[float, object]:
        request = self.encode(path, body)
        t0 = time.perf_counter()
        status, data = self.send(request)
        dt = time.perf_counter() - t0
        if status != 200:
            raise RuntimeError(f"{path}: {status} {data[:200]!r}")
        return dt, orjson.loads(data) if parse else data


def best_host(answer: object) -> str:
    """The host with the highest score in a `HostPriorityList`: gsched gives exactly one
    node 10, found in the bytes (decoding 10,000 entries in Python would be the load
    generator's time, which kube-scheduler spends in Go); else decoded."""
    assert isinstance(answer, bytes)
    at = answer.find(b',"Score":10}')
    start = answer.rfind(b'{"Host":', 0, at) if at >= 0 else -1
    if start >= 0 and answer.find(b',"Score":10}', at + 1) < 0:
        return orjson.loads(answer[start + len(b'{"Host":'):at])
    return max(orjson.loads(answer), key=lambda h: h["Score"])["Host"]


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.array(xs) * 1e3, q))


def cycle(port: int, pods: list[dict], names: list[str], nodes_json: dict | None
          ) -> dict[str, object]:
    """filter → prioritize → bind per pod, as kube-scheduler does; latencies per verb."""
    conn = Conn(port)
    lat: dict[str, list[float]] = {"filter": [], "prioritize": [], "bind": []}
    requests = 0
    t0 = time.perf_counter()
    # kube-scheduler's own encoding is Go's cost, not the extender's: encode up front
    bodies = [orjson.dumps({"Pod": pod, "Nodes": None, "NodeNames": names}
                           if nodes_json is None else
                           {"Pod": pod, "Nodes": nodes_json, "NodeNames": None})
              for pod in pods]
    t0 = time.perf_counter()
    for pod, body in zip(pods, bodies, strict=True):
        dt, res = conn.post("/filter", body)
        lat["filter"].append(dt)
        passed = res["NodeNames"] if nodes_json is None else \
            [n["metadata"]["name"] for n in res["Nodes"]["items"]]
        requests += 1
        if not passed:
            continue
        if len(passed) > 1:  # kube-scheduler skips prioritize for a single node
            if len(passed) == len(names):
                pbody = body
            elif nodes_json is None:
                pbody = orjson.dumps({"Pod": pod, "Nodes": None, "NodeNames": passed})
            else:
                keep = set(passed)
                pbody = orjson.dumps({"Pod": pod, "NodeNames": None, "Nodes": {
                    "metadata": {}, "items": [n for n in nodes_json["items"]
                                              if n["metadata"]["name"] in keep]}})
            dt, answer = conn.post("/prioritize", pbody, parse=False)
            lat["prioritize"].append(dt)
            requests += 1
            best = best_host(answer)
        else:
            best = passed[0]
        meta = pod["metadata"]
        dt, res = conn.post("/bind", orjson.dumps({
            "PodName": meta["name"], "PodNamespace": meta["namespace"],
            "PodUID": meta["uid"], "Node": best}))
        lat["bind"].append(dt)
        requests += 1
        if res["Error"]:
            raise RuntimeError(res["Error"])
    wall = time.perf_counter() - t0
    return {"lat": lat, "requests": requests, "wall": wall}


def _client(port: int, requests: list[bytes], start: Any, out: Any) -> None:
    """One load-generator process: its own connection, pre-encoded requests sent in
    order, answers read (status checked) but not decoded."""
    conn = Conn(port)
    start.wait()
    t0, c0 = time.perf_counter(), time.process_time()
    for req in requests:
        status, data = conn.send(req)
        if status != 200:
            out.put(("error", f"{status} {data[:200]!r}"))
            return
    out.put((len(requests), t0, time.perf_counter(), time.process_time() - c0))


def throughput(srv: Served, pods: list[dict], names: list[str], connections: int
               ) -> tuple[float, float, float]:
    """(peak filter+prioritize requests/s, CPU cores the server and the load generator
    used while the clients ran) with `connections` client processes, each asking about
    its own pods (no pod twice). The server's CPU is read when every client is connected
    and ready and again when the last has finished, so encoding the requests and
    starting the clients do not dilute it."""
    port = srv.port
    per = len(pods) // connections
    ctx = multiprocessing.get_context("fork")
    start, out = ctx.Barrier(connections + 1), ctx.Queue()
    procs = []
    for k in range(connections):
        reqs = []
        for p in pods[k * per:(k + 1) * per]:
            body = orjson.dumps({"Pod": p, "Nodes": None, "NodeNames": names})
            reqs += [Conn.encode("/filter", body), Conn.encode("/prioritize", body)]
        procs.append(ctx.Process(target=_client, args=(port, reqs, start, out), daemon=True))
    for pr in procs:
        pr.start()
    start.wait()
    c0, t0 = srv.cpu_seconds(), time.perf_counter()
    results = [out.get(timeout=600) for _ in procs]
    server = (srv.cpu_seconds() - c0) / (time.perf_counter() - t0)
    for pr in procs:
        pr.join(timeout=30)
    errors = [r[1] for r in results if r[0] == "error"]
    if errors:
        raise RuntimeError(f"throughput: {errors[0]}")
    wall = max(r[2] for r in results) - min(r[1] for r in results)
    return sum(r[0] for r in results) / wall, server, sum(r[3] for r in results) / wall


def main() -> None:
    gc.set_threshold(50_000, 20, 100)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", default="1000,5000,10000")
    ap.add_argument("--policies", default="tidal,binpack")
    ap.add_argument("--pods", type=int, default=300, help="pods per run, nodeCacheCapable")
    ap.add_argument("--nocache-pods", type=int, default=20, help="pods per run, Nodes mode")
    ap.add_argument("--connections", type=int, default=4,
                    help="load-generator processes of the throughput test (0: none)")
    ap.add_argument("--tput-pods", type=int, default=100,
                    help="pods per connection in the throughput test")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}; server and load generator share it\n")
    print("| nodes | policy | mode | filter p50 / p99 (ms) | prioritize p50 / p99 (ms) | "
          "bind p50 / p99 (ms) | req/s (closed loop) | req/s, "
          f"{a.connections} connections | load avg | CPU cores, server / generator |")
    print("| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for n in [int(x) for x in a.nodes.split(",")]:
        names = [f"gpu-node-{i}" for i in range(n)]
        nodes_json = k8s_nodes(n) if a.nocache_pods else None
        for policy in a.policies.split(","):
            for mode in ("NodeNames", "Nodes"):
                count = a.pods if mode == "NodeNames" else a.nocache_pods
                if not count:
                    continue
                rng = np.random.default_rng(a.seed)
                with tempfile.TemporaryDirectory() as d:
                    d = Path(d)
                    db = d / "gsched.db"
                    preload(db, n, rng)
                    srv = Served(write_cluster(d, n), db, policy)
                    try:
                        pods = [k8s_pod(i, rng) for i in range(count + 20)]
                        gc.collect()
                        gc.freeze()  # the generator's own pauses must not count
                        cycle(srv.port, pods[:20], names, None)  # warm-up
                        r = cycle(srv.port, pods[20:], names,
                                  None if mode == "NodeNames" else nodes_json)
                        tput = cores = ""
                        if mode == "NodeNames" and a.connections:
                            more = [k8s_pod(10_000 + i, rng)
                                    for i in range(a.connections * a.tput_pods)]
                            rate, server, gen = throughput(srv, more, names, a.connections)
                            tput, cores = f"{rate:,.0f}", f"{server:.2f} / {gen:.2f}"
                    finally:
                        srv.stop()
                lat = r["lat"]
                cell = {v: f"{pct(xs, 50):.2f} / {pct(xs, 99):.2f}" if xs else "-"
                        for v, xs in lat.items()}
                print(f"| {n:,} | {policy} | {mode} | {cell['filter']} | {cell['prioritize']}"
                      f" | {cell['bind']} | {r['requests'] / r['wall']:,.0f} | {tput} | "
                      f"{os.getloadavg()[0]:.1f} | {cores} |", flush=True)


if __name__ == "__main__":
    main()
