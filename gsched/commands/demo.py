"""`gsched demo`: replay agents, the scheduler's ingestion and Prometheus, on loopback.

One command starts the whole monitoring pipeline on a laptop: `--nodes` agent processes
(`gsched agent --source replay:...`) each replaying the Alibaba GenAI duty-cycle trace on
a virtual 8-GPU node; the scheduler in this process (the extender's HTTP server over
those nodes, with report ingestion mounted: SQLite history, profile learning,
`/metrics`); and a real Prometheus server, if installed, scraping all of them with a
generated config in a temporary directory. It prints where to look and a few live
numbers; Ctrl-C (or `--duration`) stops everything.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Annotated

import typer

DEFAULT_TRACE = "alibaba-genai/pod_gpu_duty_cycle_anon.tar.gz"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, timeout_s: float, proc: subprocess.Popen | None = None) -> bool:
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return True
        except OSError:
            time.sleep(0.2)
    return False


def _prometheus_config(interval_s: int, agents: list[int], scheduler: int) -> str:
    targets = ", ".join(f"'127.0.0.1:{p}'" for p in agents)
    return (f"global:\n  scrape_interval: {interval_s}s\n  evaluation_interval: {interval_s}s\n"
            "scrape_configs:\n"
            f"  - job_name: gsched-agent\n    static_configs:\n      - targets: [{targets}]\n"
            f"  - job_name: gsched-scheduler\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{scheduler}']\n")


def demo_cmd(
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds "
                                                        "(default: until Ctrl-C).")] = None,
    nodes: Annotated[int, typer.Option(min=1, max=8, help="Replay agents to start.")] = 3,
    trace: Annotated[Path | None, typer.Option(help="Replay trace (default: the GenAI "
                                                    "duty-cycle tarball in the shared "
                                                    "traces).")] = None,
    speed: Annotated[float, typer.Option(help="Trace seconds per wall second (600: a day "
                                              "in 2.4 minutes).")] = 600.0,
    interval: Annotated[float, typer.Option(help="Agent sampling interval, seconds.")] = 1.0,
    prometheus_port: Annotated[int, typer.Option(min=0, max=65535,
                                                 help="Prometheus port (0: any free "
                                                      "port).")] = 0,
    scheduler_port: Annotated[int, typer.Option(min=0, max=65535,
                                                help="Scheduler port (0: any free port).")]
    = 0,
    workdir: Annotated[Path | None, typer.Option(help="Keep files here instead of a "
                                                      "temporary directory.")] = None,
) -> None:
    """Run replay agents, the scheduler and Prometheus on loopback; print live numbers."""
    from gsched.errors import InputError, UnavailableError
    from gsched.models import Cluster, Node
    from gsched.scheduler.extender.history import UsageHistory
    from gsched.scheduler.extender.ingest import IngestService
    from gsched.scheduler.extender.metrics import SchedulerMetrics
    from gsched.scheduler.extender.server import ExtenderServer, ServerConfig
    from gsched.scheduler.extender.store import Store
    from gsched.scheduler.extender.verbs import Extender
    from gsched.scheduler.policies.registry import make_policy
    from gsched.traces.paths import shared_traces_dir

    for value, flag in ((speed, "--speed"), (interval, "--interval")):
        if not value > 0:
            raise InputError(f"must be positive, got {value:g}", field=flag)
    if duration is not None and duration < 0:
        raise InputError(f"must be positive, got {duration:g}", field="--duration")
    trace = trace or shared_traces_dir() / DEFAULT_TRACE
    if not trace.exists():
        raise InputError("replay trace not found (set GSCHED_TRACES or pass --trace)",
                         file=str(trace))
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="gsched-demo-")
        work = Path(tmp.name)
    else:
        work = workdir
        work.mkdir(parents=True, exist_ok=True)
    token = os.urandom(16).hex()
    (work / "token").write_text(token + "\n")
    os.chmod(work / "token", 0o600)

    # The scheduler: the extender over the demo's virtual nodes, with report ingestion
    # mounted on its HTTP server; history, profiles and assignments share one SQLite file.
    metrics = SchedulerMetrics()
    db = work / "gsched.sqlite"
    cluster = Cluster(nodes=[Node(name=f"demo-node-{i + 1}", gpu_count=8, gpu_model="A100")
                             for i in range(nodes)])
    store = Store(db)
    extender = Extender(cluster, make_policy("tidal"), store=store, metrics=metrics)
    history = UsageHistory(db)
    ingest = IngestService(history, metrics, token, profile_interval_s=10.0,
                           on_profiles=extender.set_profiles)
    try:
        server = ExtenderServer(extender, metrics,
                                ServerConfig(host="127.0.0.1", port=scheduler_port, token=token),
                                extra_routes=ingest.routes()).start()
    except OSError as e:
        raise UnavailableError(f"cannot listen on 127.0.0.1:{scheduler_port}: "
                               f"{e.strerror}") from None
    ingest.start()
    sport = server.port
    sched_url = server.url

    procs: list[tuple[str, subprocess.Popen]] = []
    stop = threading.Event()
    old_term = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    prom_url = None
    try:
        agent_ports = []
        for i in range(nodes):
            port = _free_port()
            agent_ports.append(port)
            node = f"demo-node-{i + 1}"
            log = open(work / f"{node}.log", "wb")  # noqa: SIM115
            p = subprocess.Popen(
                [sys.executable, "-c", "from gsched.cli import main; main()", "agent",
                 f"--source=replay:{trace}", f"--node-name={node}", f"--port={port}",
                 "--host=127.0.0.1", f"--scheduler={sched_url}",
                 f"--token-file={work / 'token'}", f"--queue-dir={work / node}",
                 f"--interval={interval}", "--report-every=5", f"--speed={speed}",
                 f"--replay-offset={i * 8}"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            procs.append((node, p))
        prom_bin = shutil.which("prometheus") or (
            "/usr/bin/prometheus" if os.access("/usr/bin/prometheus", os.X_OK) else None)
        if prom_bin is None:
            typer.echo("prometheus is not installed (apt-get install prometheus): running "
                       "without it", err=True)
        else:
            pport = prometheus_port or _free_port()
            (work / "prometheus.yml").write_text(_prometheus_config(2, agent_ports, sport))
            plog = open(work / "prometheus.log", "wb")  # noqa: SIM115
            pp = subprocess.Popen(
                [prom_bin, f"--config.file={work / 'prometheus.yml'}",
                 f"--storage.tsdb.path={work / 'prometheus-data'}",
                 f"--web.listen-address=127.0.0.1:{pport}", "--log.level=warn"],
                stdout=plog, stderr=subprocess.STDOUT, start_new_session=True)
            procs.append(("prometheus", pp))
            prom_url = f"http://127.0.0.1:{pport}"
            if not _wait_http(prom_url + "/-/ready", 30, pp):
                typer.echo(f"prometheus did not start; see {work / 'prometheus.log'}",
                           err=True)
                prom_url = None
        for (node, p), port in zip(procs, agent_ports, strict=False):
            if not _wait_http(f"http://127.0.0.1:{port}/metrics", 30, p):
                raise UnavailableError(f"agent {node} did not start; see "
                                       f"{work / (node + '.log')}")
        _print_where(work, sched_url, agent_ports, prom_url, nodes, trace, speed)
        _report_loop(stop, duration, ingest, metrics, prom_url, procs)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, old_term)
        typer.echo("stopping ...", err=True)
        for _, p in procs:
            if p.poll() is None:
                p.terminate()
        for _, p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        ingest.stop()
        server.stop()
        counts = history.counts()
        history.close()
        store.close()
        typer.echo(f"stored {counts['usage_reports']} reports, "
                   f"{counts['usage_samples'] + counts['usage_gpu_samples']} samples; "
                   f"learned {len(ingest.profiles)} profiles", err=True)
        if tmp is not None:
            tmp.cleanup()


def _print_where(work: Path, sched_url: str, agent_ports: list[int], prom_url: str | None,
                 nodes: int, trace: Path, speed: float) -> None:
    echo = typer.echo
    echo(f"gsched demo: {nodes} replay agents x 8 virtual GPUs replaying {trace.name} at "
         f"{speed:g}x")
    for i, p in enumerate(agent_ports):
        echo(f"  agent demo-node-{i + 1}:  http://127.0.0.1:{p}/metrics")
    echo(f"  scheduler:          {sched_url}/metrics   (reports: POST {sched_url}/v1/reports)")
    if prom_url:
        echo(f"  prometheus:         {prom_url}/graph")
        echo("    try: avg by (Hostname) (DCGM_FI_DEV_GPU_UTIL)")
        echo("         gsched_node_actual_utilization_ratio")
        echo("         sum by (outcome) (rate(gsched_agent_reports_total[1m]))")
    echo(f"  files:              {work}")
    echo("Ctrl-C stops everything.")


def _report_loop(stop: threading.Event, duration: float | None, ingest, metrics,  # noqa: ANN001
                 prom_url: str | None, procs: list) -> None:
    import json
    import urllib.parse
    import urllib.request

    start = time.monotonic()
    reg = metrics.registry
    while True:
        left = None if duration is None else duration - (time.monotonic() - start)
        if left is not None and left <= 0:
            return
        if stop.wait(min(5.0, left) if left is not None else 5.0):
            return
        dead = [n for n, p in procs if p.poll() is not None]
        if dead:
            typer.echo(f"stopped unexpectedly: {', '.join(dead)}", err=True)
            return
        nodes = sorted({s.labels["node"] for fam in reg.collect() for s in fam.samples
                        if s.name == "gsched_node_actual_utilization_ratio"})
        util = " ".join(
            f"{n}={reg.get_sample_value('gsched_node_actual_utilization_ratio', {'node': n}):.0%}"
            for n in nodes)
        accepted = sum(s.value for fam in reg.collect() for s in fam.samples
                       if s.name == "gsched_agent_reports_total"
                       and s.labels.get("outcome") == "accepted")
        samples = reg.get_sample_value("gsched_agent_samples_total") or 0
        learned = sum(p.source == "learned" for p in ingest.profiles.values())
        line = (f"[{time.monotonic() - start:5.0f}s] reports {accepted:.0f}, samples "
                f"{samples:.0f}, profiles learned {learned}/{len(ingest.profiles)}; "
                f"utilisation {util or '-'}")
        if prom_url:
            try:
                q = urllib.parse.urlencode({"query": "count(DCGM_FI_DEV_GPU_UTIL)"})
                with urllib.request.urlopen(f"{prom_url}/api/v1/query?{q}", timeout=2) as r:
                    res = json.loads(r.read())["data"]["result"]
                line += f"; Prometheus sees {res[0]['value'][1] if res else 0} GPU series"
            except OSError:
                pass
        typer.echo(line)


def register(app: typer.Typer) -> None:
    app.command("demo",
                short_help="Replay agents, the scheduler and Prometheus on loopback.")(demo_cmd)
