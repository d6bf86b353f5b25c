"""`gsched serve`: the kube-scheduler extender (and agent-report ingestion)."""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import threading
from pathlib import Path
from typing import Annotated

import typer

from gsched.errors import InputError


def _read_secret(path: Path | None, what: str) -> str | None:
    if path is None:
        return None
    try:
        text = path.read_text().strip()
    except OSError as e:
        raise InputError(f"cannot read {what}: {e.strerror}", file=str(path)) from None
    if not text:
        raise InputError(f"{what} is empty", file=str(path))
    return text


def serve_cmd(
    cluster: Annotated[Path | None, typer.Option(
        help="Static GPU inventory (a cluster file): run without an API server; binds are "
             "recorded in the store only.")] = None,
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = 8888,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "0.0.0.0",
    prefix: Annotated[str, typer.Option(help="URL prefix of the verbs (kube-scheduler's "
                                             "urlPrefix path).")] = "",
    policy: Annotated[str, typer.Option(help="Placement policy (k8s-spread, binpack, bestfit, "
                                             "fgd, peak, tidal).")] = "tidal",
    headroom: Annotated[float, typer.Option(help="Share of each GPU kept free of predicted "
                                                 "load (tidal).")] = 0.1,
    db: Annotated[Path, typer.Option(help="SQLite store: profiles, assignments, usage "
                                          "history.")] = Path("gsched.db"),
    token_file: Annotated[Path | None, typer.Option(
        help="File holding the bearer token callers must present.")] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="TLS certificate (PEM).")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="TLS private key (PEM).")] = None,
    tls_client_ca: Annotated[Path | None, typer.Option(
        help="Require TLS client certificates signed by this CA (kube-scheduler's "
             "extender tlsConfig certFile/keyFile).")] = None,
    open_verbs: Annotated[bool, typer.Option(
        help="The token guards agent reports only, not the extender verbs (kube-scheduler "
             "cannot send a bearer token; protect the verbs with --tls-client-ca).")] = False,
    kubeconfig: Annotated[Path | None, typer.Option(
        help="kubeconfig file (default: in-cluster config, else ~/.kube/config).")] = None,
    max_body_mib: Annotated[int, typer.Option(help="Largest request body accepted, MiB.")]
    = 64,
    lease_namespace: Annotated[str, typer.Option(help="Namespace of the leader Lease.")]
    = "gsched-system",
    lease_name: Annotated[str, typer.Option(help="Name of the leader Lease.")] = "gsched",
    identity: Annotated[str | None, typer.Option(
        help="This replica's name in the Lease (default: $POD_NAME, else the hostname).")]
    = None,
    move_training: Annotated[bool, typer.Option(
        help="The leader evicts preemptible training pods the policy wants moved out before "
             "a predicted peak (tidal), so their controller recreates them elsewhere.")]
    = True,
    replan_every: Annotated[float, typer.Option(
        min=0.0, help="Kubernetes mode: the leader re-plans running and pending pods with "
                      "CP-SAT this often (seconds; 0: never), moving training within a "
                      "budget; tidal follows the plan.")] = 900.0,
    guard: Annotated[bool, typer.Option(
        help="Load guard: a GPU whose reported load is over --guard-safe-line is closed to "
             "new work until it recedes, and the leader evicts its training pods.")] = True,
    guard_safe_line: Annotated[float, typer.Option(
        min=0.05, max=1.0, help="Measured utilisation over which the guard acts.")] = 0.95,
    history_resolution: Annotated[float, typer.Option(
        min=0.0, help="Seconds per stored usage row per series (mean of the samples in it); "
                      "0 stores every sample. 15-minute profiles need no finer than 60.")]
    = 60.0,
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds.")]
    = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Serve the kube-scheduler extender API (filter, prioritize, bind, preempt),
    /healthz, /readyz, /metrics and agent reports (POST /v1/reports)."""
    from gsched.scheduler.extender.history import UsageHistory
    from gsched.scheduler.extender.ingest import IngestService
    from gsched.scheduler.extender.metrics import SchedulerMetrics
    from gsched.scheduler.extender.server import ExtenderServer, ServerConfig
    from gsched.scheduler.extender.store import Store
    from gsched.scheduler.extender.verbs import Extender
    from gsched.scheduler.policies.policy import PolicyConfig
    from gsched.scheduler.policies.registry import make_policy
    from gsched.traces.cluster import load_cluster

    logging.basicConfig(level=log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if (tls_cert is None) != (tls_key is None):
        raise InputError("give both --tls-cert and --tls-key, or neither", field="--tls-cert")
    if cluster is not None and kubeconfig is not None:
        raise InputError("--cluster (static) and --kubeconfig exclude each other",
                         field="--cluster")
    if not 0 <= headroom < 1:
        raise InputError(f"must be in [0, 1), got {headroom}", field="--headroom")
    token = _read_secret(token_file, "token file")
    if tls_client_ca is not None and tls_cert is None:
        raise InputError("--tls-client-ca needs --tls-cert and --tls-key",
                         field="--tls-client-ca")
    for f in (tls_cert, tls_key, tls_client_ca):
        if f is not None and not f.is_file():
            raise InputError("no such file", file=str(f))
    pol = make_policy(policy, PolicyConfig(headroom=headroom))
    metrics = SchedulerMetrics()
    store = Store(db)
    history = UsageHistory(db, resolution_s=history_resolution)
    stoppers: list = []
    evictor = None  # the Eviction API, in Kubernetes mode (the load guard's hand)

    if cluster is not None:
        from gsched.scheduler.extender.leader import StaticLeader

        inventory = load_cluster(cluster)
        ext = Extender(inventory, pol, store=store, metrics=metrics)
        restored = ext.restore_from_store()
        ext.ready.set()
        metrics.leader.set(1)
        mode = f"static inventory {cluster} ({len(inventory.nodes)} nodes, " \
               f"{inventory.total_gpus} GPUs; {restored} assignments restored)"
        _ = StaticLeader()
    else:
        from kubernetes import client

        from gsched.models import Cluster
        from gsched.scheduler.extender.kube import (
            KubeBinder,
            KubeSync,
            leader_labeller,
            load_kube_config,
            pod_evictor,
        )
        from gsched.scheduler.extender.leader import LeaderElector
        from gsched.scheduler.extender.planner import Planner

        api = load_kube_config(str(kubeconfig) if kubeconfig else None)
        core = client.CoreV1Api(api)
        evictor = pod_evictor(core)
        name = identity or os.environ.get("POD_NAME") or socket.gethostname()
        elector = LeaderElector(client.CoordinationV1Api(api), lease_namespace, lease_name,
                                name, metrics=metrics,
                                on_change=leader_labeller(core, os.environ.get("POD_NAMESPACE"),
                                                          os.environ.get("POD_NAME")))
        ext = Extender(Cluster(nodes=[]), pol, store=store, binder=KubeBinder(core),
                       metrics=metrics, is_leader=elector.is_leader,
                       leader_name=elector.leader_name)
        sync = KubeSync(core, ext)
        ext.pod_lookup = sync.pod_lookup
        sync.start()
        elector.start()
        stoppers += [elector.stop, sync.stop]
        if move_training:
            planner = Planner(ext, pod_evictor(core), is_leader=elector.is_leader).start()
            stoppers.insert(0, planner.stop)
        if replan_every > 0 and pol.profile_aware:
            from gsched.scheduler.extender.replanner import LeaderReplanner

            replanner = LeaderReplanner(ext, evictor if move_training else None,
                                        is_leader=elector.is_leader,
                                        every_s=replan_every).start()
            stoppers.insert(0, replanner.stop)
        mode = f"Kubernetes ({len(sync.nodes)} GPU nodes), replica {name}"

    on_report = None
    if guard:  # the tidal loop's load guard (extender/guard.py)
        from gsched.scheduler.extender.guard import LoadGuard

        on_report = LoadGuard(ext, evictor, is_leader=ext.is_leader,
                              safe_line=guard_safe_line,
                              recede_line=min(0.85, guard_safe_line)).on_report
    ingest = IngestService(history, metrics, token, on_profiles=ext.set_profiles,
                           on_report=on_report)
    ingest.start()
    stoppers.insert(0, ingest.stop)
    config = ServerConfig(host=host, port=port, prefix=prefix, token=token, tls_cert=tls_cert,
                          tls_key=tls_key, max_body_bytes=max_body_mib << 20,
                          token_verbs=not open_verbs, tls_client_ca=tls_client_ca)
    server = ExtenderServer(ext, metrics, config, extra_routes=ingest.routes(),
                            ready=ext.ready.is_set)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def gauges() -> None:
        while not stop.wait(15.0):
            try:
                ext.refresh_gauges()
            except Exception:  # a gauge must never take the server down
                logging.getLogger(__name__).exception("refreshing gauges")

    ext.refresh_gauges()
    threading.Thread(target=gauges, name="gsched-gauges", daemon=True).start()
    # Requests allocate many short-lived objects (a 10,000-name list each); with the
    # default thresholds the collector keeps rescanning the long-lived cluster state,
    # which showed up as 100+ ms pauses at p99. Freeze what exists now and collect the
    # young generation less often.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    server.start()
    auth = ("token on reports only" if open_verbs else "bearer token") if token else "no token"
    tls = (", TLS with client certificates" if tls_client_ca else ", TLS") if tls_cert else ""
    typer.echo(f"gsched serve: policy {policy}, {mode}; listening on {server.url}"
               f"{config.prefix} ({auth}{tls})", err=True)
    try:
        stop.wait(timeout=duration)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        for fn in stoppers:
            fn()
        store.close()
        history.close()


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_cmd)
