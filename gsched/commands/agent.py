"""`gsched agent`: the node agent (NVML or a replayed trace → /metrics and reports)."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from pathlib import Path
from typing import Annotated, Literal

import typer

LogLevel = Literal["debug", "info", "warning", "error"]


def agent_cmd(
    source: Annotated[str, typer.Option(help="'nvml' (the GPUs of this machine) or "
                                             "'replay:PATH' (a GenAI duty-cycle tarball or a "
                                             "native trace).")] = "nvml",
    interval: Annotated[float, typer.Option(help="Seconds between samples.")] = 1.0,
    port: Annotated[int, typer.Option(min=-1, max=65535,
                                      help="Port of /metrics (0: any free port; -1: none).")]
    = 9400,
    host: Annotated[str, typer.Option(help="Address /metrics listens on.")] = "0.0.0.0",
    scheduler: Annotated[str | None, typer.Option(help="Scheduler URL to push reports to, "
                                                       "e.g. http://gsched:8888.")] = None,
    token_file: Annotated[Path | None, typer.Option(help="File holding the bearer token.")]
    = None,
    queue_dir: Annotated[Path | None, typer.Option(help="Directory of the on-disk report "
                                                        "queue.")] = None,
    queue_max: Annotated[int, typer.Option(min=1, help="Reports the queue keeps before "
                                                       "dropping the oldest.")] = 8640,
    report_every: Annotated[int, typer.Option(help="Samples per report.")] = 10,
    node_name: Annotated[str | None, typer.Option(help="Node name (default: $NODE_NAME, "
                                                       "else the hostname).")] = None,
    gpus: Annotated[int, typer.Option(help="Replay: GPUs of the virtual node.")] = 8,
    pods_per_gpu: Annotated[int, typer.Option(help="Replay: pods sharing each GPU.")] = 1,
    speed: Annotated[float, typer.Option(help="Replay: trace seconds per wall second.")]
    = 1.0,
    replay_offset: Annotated[int | None, typer.Option(help="Replay: first pod to take "
                                                           "(default: hash of node name).")]
    = None,
    gpu_model: Annotated[str, typer.Option(help="Replay: GPU model of the virtual node.")]
    = "A100",
    kube: Annotated[bool | None, typer.Option(
        "--kube/--no-kube", help="NVML: name pods through the Kubernetes API (default: when "
                                 "running in a cluster).")] = None,
    duration: Annotated[float | None, typer.Option(min=0.0,
                                                   help="Stop after this many seconds.")]
    = None,
    log_level: Annotated[LogLevel, typer.Option(case_sensitive=False,
                                                help="How much to log.")] = "info",
) -> None:
    """Sample GPUs (or replay a trace), serve /metrics, push reports to the scheduler."""
    from gsched.agents.agent import Agent, AgentConfig
    from gsched.agents.replay import ReplaySource, parse_source
    from gsched.agents.reporter import read_token

    logging.basicConfig(level=log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    node = node_name or os.environ.get("NODE_NAME") or socket.gethostname()
    kind, path = parse_source(source)
    config = AgentConfig(node=node, interval_s=interval, report_every=report_every,
                         port=None if port < 0 else port, host=host, scheduler=scheduler,
                         token=read_token(token_file), queue_dir=queue_dir,
                         queue_max=queue_max)
    if kind == "replay":
        assert path is not None
        src = ReplaySource(path, node, gpus=gpus, pods_per_gpu=pods_per_gpu, speed=speed,
                           offset=replay_offset, gpu_model=gpu_model)
    else:
        src = _nvml_source(node, kube)
    agent = Agent(src, config)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    agent.start()
    where = f"http://{host}:{agent.port}/metrics" if agent.port is not None else "no /metrics"
    reports = f"reporting to {scheduler}" if scheduler else "not reporting"
    typer.echo(f"gsched agent on {node}: {src.kind} source, {where}, {reports}", err=True)
    try:
        stop.wait(timeout=duration)
    except KeyboardInterrupt:
        pass
    finally:
        agent.stop()


def _nvml_source(node: str, kube: bool | None):  # noqa: ANN202
    from gsched.agents.nvml import NvmlSource
    from gsched.agents.pods import PodAttributor, PodDirectory, kubernetes_pod_lister

    directory = None
    if kube or (kube is None and os.environ.get("KUBERNETES_SERVICE_HOST")):
        try:
            directory = PodDirectory(kubernetes_pod_lister(node))
        except Exception as e:  # no kubeconfig: sample GPUs anyway, without pod names
            logging.getLogger(__name__).warning("pods will not be named: %s", e)
    proc_root = os.environ.get("GSCHED_PROC_ROOT", "/proc")
    return NvmlSource(node, attributor=PodAttributor(directory, proc_root))


def register(app: typer.Typer) -> None:
    app.command("agent",
                short_help="Node agent: GPU samples (NVML or replay), /metrics, reports.",
                )(agent_cmd)
