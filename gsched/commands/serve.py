"""`gsched serve`: the kube-scheduler extender (and agent-report ingestion)."""

from __future__ import annotations

import errno
import gc
import ipaddress
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal, TypeVar

import typer

from gsched.errors import InputError

T = TypeVar("T")
LogLevel = Literal["debug", "info", "warning", "error"]


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


def _open_store(db: Path, resolution_s: float):  # noqa: ANN202 - extender types, lazily
    import sqlite3

    from gsched.scheduler.extender.history import UsageHistory
    from gsched.scheduler.extender.store import Store

    if db.is_dir():
        raise InputError("is a directory; --db needs a file name", file=str(db), field="--db")
    try:
        return Store(db), UsageHistory(db, resolution_s=resolution_s)
    except sqlite3.Error as e:
        raise InputError(f"cannot open the store: {e}", file=str(db), field="--db") from None


def _listen(make: Callable[[], T], host: str, port: int) -> T:
    """Bind the listener, turning a port in use or a bad address into a user error."""
    import ssl

    try:
        return make()
    except ssl.SSLError as e:
        raise InputError(f"cannot load the TLS certificate or key: {e.reason or e}",
                         field="--tls-cert") from None
    except OSError as e:
        why = e.strerror or str(e)
        if e.errno == errno.EADDRINUSE:
            why = "the port is in use (another gsched serve?); pick another --port, or 0"
        raise InputError(f"cannot listen on {_hostport(host, port)}: {why}",
                         field="--port" if e.errno == errno.EADDRINUSE else "--host") from None


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bound_url(server) -> str:  # noqa: ANN001 - ExtenderServer, imported lazily
    """The address the socket is really bound to (0.0.0.0 stays 0.0.0.0)."""
    host, port = server.httpd.server_address[:2]
    scheme = "https" if server.httpd.tls is not None else "http"
    return f"{scheme}://{_hostport(str(host), int(port))}"


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return host == "localhost"


def exposure_warning(host: str, token: bool, open_verbs: bool, client_ca: bool) -> str | None:
    """Why a listener reachable from other machines is open to anyone there, or None."""
    if is_loopback(host):
        return None
    try:
        every = ipaddress.ip_address(host).is_unspecified
    except ValueError:
        every = False
    where = (f"listening on every interface ({host})" if every else f"listening on {host}") \
        + ", reachable from other machines,"
    if not token and not client_ca:
        return (f"{where} and nothing authenticates callers: anyone who can reach it can "
                "bind pods and post reports (pass --token-file, or --host 127.0.0.1)")
    if open_verbs and not client_ca:
        return (f"{where} and the extender verbs take no token (--open-verbs): anyone who "
                "can reach it can bind pods (add --tls-client-ca, or a NetworkPolicy)")
    return None


def serve_cmd(
    cluster: Annotated[Path | None, typer.Option(
        help="Static GPU inventory (a cluster file): run without an API server; binds are "
             "recorded in the store only.")] = None,
    port: Annotated[int, typer.Option(min=0, max=65535,
                                      help="Port to listen on (0: any free port).")] = 8888,
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0: every interface, "
                                           "as in a pod).")] = "127.0.0.1",
    prefix: Annotated[str, typer.Option(help="URL prefix of the verbs (kube-scheduler's "
                                             "urlPrefix path).")] = "",
    policy: Annotated[str, typer.Option(help="Placement policy (k8s-spread, binpack, bestfit, "
                                             "fgd, peak, tidal).")] = "tidal",
    headroom: Annotated[float, typer.Option(help="Share of each GPU kept free of predicted "
                                                 "load (tidal).")] = 0.1,
    inference_reserve: Annotated[float, typer.Option(
        min=0.0, max=4.0, help="tidal: the relative surge inference sharing a GPU with "
                               "inference must survive (0: share by profile alone).")] = 0.0,
    workload: Annotated[Path | None, typer.Option(
        help="A trace whose jobs describe the expected workload: the target distribution "
             "that fgd and tidal weigh fragmentation against (gsched simulate uses the "
             "simulated trace's own).")] = None,
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
    max_body_mib: Annotated[int, typer.Option(min=1,
                                              help="Largest request body accepted, MiB.")]
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
    margin_quantile: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="Each learned profile books (1 + its own margin): this "
                               "quantile of how far its last three days came above their "
                               "forecasts (0: the learned quantile alone).")] = 0.9,
    history_resolution: Annotated[float, typer.Option(
        min=0.0, help="Seconds per stored usage row per series (mean of the samples in it); "
                      "0 stores every sample. 15-minute profiles need no finer than 60.")]
    = 60.0,
    duration: Annotated[float | None, typer.Option(min=0.0,
                                                   help="Stop after this many seconds.")]
    = None,
    log_level: Annotated[LogLevel, typer.Option(case_sensitive=False,
                                                help="How much to log.")] = "info",
) -> None:
    """Serve the kube-scheduler extender API (filter, prioritize, bind, preempt),
    /healthz, /readyz, /metrics and agent reports (POST /v1/reports)."""
    from gsched.scheduler.extender.ingest import IngestService
    from gsched.scheduler.extender.metrics import SchedulerMetrics
    from gsched.scheduler.extender.server import ExtenderServer, ServerConfig
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
    expected = []
    if workload is not None:
        from gsched.traces.load import load_trace

        expected = load_trace(workload).jobs
    pol = make_policy(policy, PolicyConfig(headroom=headroom, workload=expected,
                                           inference_reserve=inference_reserve))
    metrics = SchedulerMetrics()
    store, history = _open_store(db, history_resolution)
    stoppers: list = []
    evictor = None  # the Eviction API, in Kubernetes mode (the load guard's hand)

    if cluster is not None:
        from gsched.scheduler.extender.leader import StaticLeader

        inventory = load_cluster(cluster)
        ext = Extender(inventory, pol, store=store, metrics=metrics)
        restored = ext.restore_from_store()
        ext.ready.set()
        metrics.leader.set(1)
        plural = "" if restored == 1 else "s"
        mode = f"static inventory {cluster} ({len(inventory.nodes)} nodes, " \
               f"{inventory.total_gpus} GPUs; {restored} assignment{plural} restored)"
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

        load_guard = LoadGuard(ext, evictor, is_leader=ext.is_leader,
                               safe_line=guard_safe_line,
                               recede_line=min(0.85, guard_safe_line)).start(1.0)
        stoppers.insert(0, load_guard.stop)
        on_report = load_guard.on_report
    ingest = IngestService(history, metrics, token, on_profiles=ext.set_profiles,
                           margin_quantile=margin_quantile or None,
                           on_report=on_report)
    config = ServerConfig(host=host, port=port, prefix=prefix, token=token, tls_cert=tls_cert,
                          tls_key=tls_key, max_body_bytes=max_body_mib << 20,
                          token_verbs=not open_verbs, tls_client_ca=tls_client_ca)
    try:
        server = _listen(lambda: ExtenderServer(ext, metrics, config,
                                                extra_routes=ingest.routes(),
                                                ready=ext.ready.is_set), host, port)
    except InputError:
        for fn in stoppers:
            fn()
        store.close()
        history.close()
        raise
    ingest.start()
    stoppers.insert(0, ingest.stop)
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
    bound = bound_url(server)
    typer.echo(f"gsched serve: policy {policy}, {mode}; listening on {bound}"
               f"{config.prefix} ({auth}{tls})", err=True)
    typer.echo(f"gsched serve: store {db.resolve()} (profiles, binds, usage history; binds "
               "are restored from it on the next start)", err=True)
    exposure = exposure_warning(server.httpd.server_address[0], token is not None,
                                open_verbs, tls_client_ca is not None)
    if exposure:
        typer.secho(f"warning: {exposure}", fg=typer.colors.YELLOW, err=True)
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
    app.command("serve",
                short_help="Kube-scheduler extender: filter, prioritize, bind, preempt.")(serve_cmd)
