"""The scheduler's HTTP server: extender verbs, health, metrics, and mounted routes.

Routes:
- `POST <prefix>/filter|prioritize|bind|preempt` - the kube-scheduler extender API
  (`extender.py`); the bearer token, when configured, is required here unless
  `token_verbs=False` (kube-scheduler cannot send one; use TLS client certificates);
- `GET /healthz` (the process answers), `GET /readyz` (the state is synced: 503 until
  then), `GET /metrics` (Prometheus exposition of `SchedulerMetrics.registry`);
- `extra_routes`: `{(method, path): handler}` mounted beside them, e.g. agent-report
  ingestion (`ingest.IngestService.routes()`). A handler is
  `handler(body: bytes, headers: Mapping[str, str]) -> (status, dict | list | bytes)`;
  it authenticates its own requests. Its requests are counted in the same metrics under
  `verb=<path>`.

Hostile input never produces a 5xx: a body over `max_body_bytes` is 413 (not read),
a POST without Content-Length 411, malformed JSON or a body of the wrong shape 400 with
`{"error", "field"}` naming the field. A verb that fails inside gsched answers 200 with
the failure in `Error` (what kube-scheduler reads); prioritize and preempt, whose types
have no `Error`, answer neutrally instead.

HTTP/1.1 with keep-alive (kube-scheduler reuses connections), served by one event-loop
thread (`eventloop.py`): it answers filter and prioritize itself, one at a time, from
decoding to encoding (they are CPU work under the extender's lock anyway, and threads
decoding beside it only fought for the GIL), and hands bind, preempt, health, metrics
and mounted routes to a small thread pool (they may wait on the API server or SQLite).
TLS handshakes are non-blocking on the same loop, so a slow one never blocks another
connection. Request lines, headers and answers go through `http11` (the standard
handler's behaviour, without its email parser).
"""

from __future__ import annotations

import hmac
import logging
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gsched.scheduler.extender import http11, wire
from gsched.scheduler.extender.eventloop import EventLoopServer
from gsched.scheduler.extender.metrics import SchedulerMetrics

log = logging.getLogger(__name__)

Handler = Callable[[bytes, Mapping[str, str]], tuple[int, Any]]
VERBS = ("filter", "prioritize", "bind", "preempt")
DEFAULT_MAX_BODY = 64 << 20  # a 10,000-node NodeList (non-cache mode) fits
JSON = "application/json"


class ServerConfig:
    """How the server listens and what it accepts."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8888, prefix: str = "",
                 token: str | None = None, tls_cert: Path | None = None,
                 tls_key: Path | None = None, max_body_bytes: int = DEFAULT_MAX_BODY,
                 idle_timeout_s: float = 60.0, token_verbs: bool = True,
                 tls_client_ca: Path | None = None) -> None:
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("TLS needs both a certificate and a key")
        if max_body_bytes <= 0:
            raise ValueError(f"max_body_bytes must be positive, got {max_body_bytes}")
        self.host, self.port = host, port
        self.prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
        if tls_client_ca is not None and tls_cert is None:
            raise ValueError("client certificates need TLS (a certificate and a key)")
        self.token = token or None
        #: kube-scheduler cannot send a bearer token (its extender config has no such
        #: field): with token_verbs=False the token guards mounted routes only, and the
        #: verbs rely on TLS client certificates (tls_client_ca) or the network.
        self.token_verbs = token_verbs
        self.tls_client_ca = tls_client_ca
        self.tls_cert, self.tls_key = tls_cert, tls_key
        self.max_body_bytes = max_body_bytes
        self.idle_timeout_s = idle_timeout_s


class Response:
    __slots__ = ("status", "body", "content_type", "close")

    def __init__(self, status: int, body: bytes, content_type: str = JSON,
                 close: bool = False) -> None:
        self.status, self.body, self.content_type, self.close = status, body, content_type, close


def _json(status: int, obj: Any) -> Response:
    if isinstance(obj, wire.RawJSON):  # (bytes already: sent as it is, not copied)
        return Response(status, obj)
    return Response(status, orjson.dumps(obj))


def _bad(status: int, message: str, field: str = "") -> Response:
    return _json(status, {"error": message, "field": field})


class App:
    """Request → response, without sockets (the HTTP layer below only moves bytes)."""

    def __init__(self, extender: Any, metrics: SchedulerMetrics, config: ServerConfig,
                 extra_routes: Mapping[tuple[str, str], Handler] | None = None,
                 ready: Callable[[], bool] | None = None) -> None:
        self.extender = extender
        self.metrics = metrics
        self.config = config
        self.ready = ready or (lambda: True)
        self.names = wire.NameListCache()
        #: filter and prioritize run one at a time, decoding and encoding included (see
        #: `_verb_handler`); their policy work is serialised by the extender's lock anyway
        self.cpu_lock = threading.Lock()
        self._observe: dict[str, Callable[[float], None]] = {}
        self._count: dict[tuple[str, int], Callable[[], None]] = {}
        self.routes: dict[tuple[str, str], tuple[str, Callable[[bytes, Mapping[str, str]],
                                                               Response]]] = {}
        p = config.prefix
        #: the routes the event loop answers itself (CPU work that never waits)
        self.inline_paths = frozenset({f"{p}/filter", f"{p}/prioritize"})
        for verb in VERBS:
            self.routes[("POST", f"{p}/{verb}")] = (verb, self._verb_handler(verb))
        self.routes[("GET", "/healthz")] = ("healthz", lambda b, h: _json(200, {"ok": True}))
        self.routes[("GET", "/readyz")] = ("readyz", self._readyz)
        self.routes[("GET", "/metrics")] = ("metrics", self._metrics)
        for (method, path), handler in (extra_routes or {}).items():
            key = (method.upper(), path)
            if key in self.routes:
                raise ValueError(f"route {method} {path} is already taken")
            self.routes[key] = (path, _wrap_extra(handler))
        self._paths = {path for _, path in self.routes}

    def handle(self, method: str, path: str, headers: Mapping[str, str],
               body: bytes) -> Response:
        path = path.split("?", 1)[0]
        route = self.routes.get((method, path))
        if route is None:
            status = 405 if path in self._paths else 404
            resp = _bad(status, f"{'method not allowed' if status == 405 else 'no route'}: "
                                f"{method} {path}")
            self.metrics.requests.labels(verb="unknown", code=str(status)).inc()
            return resp
        name, fn = route
        start = time.perf_counter()
        try:
            resp = fn(body, headers)
        except Exception:  # a bug in a mounted route must not become a 500 page
            log.exception("route %s %s failed", method, path)
            resp = _bad(500, "internal error")
        self._observed(name, resp.status, time.perf_counter() - start)
        return resp

    def _observed(self, name: str, status: int, seconds: float) -> None:
        """Count a request and its duration (the labelled children are looked up once:
        `labels()` costs more than the update)."""
        observe = self._observe.get(name)
        if observe is None:
            observe = self._observe[name] = self.metrics.request_duration.labels(
                verb=name).observe
        observe(seconds)
        count = self._count.get((name, status))
        if count is None:
            count = self._count[(name, status)] = self.metrics.requests.labels(
                verb=name, code=str(status)).inc
        count()

    def _readyz(self, body: bytes, headers: Mapping[str, str]) -> Response:
        ok = bool(self.ready())
        return _json(200 if ok else 503, {"ready": ok})

    def _metrics(self, body: bytes, headers: Mapping[str, str]) -> Response:
        return Response(200, generate_latest(self.metrics.registry), CONTENT_TYPE_LATEST)

    def authorised(self, headers: Mapping[str, str]) -> bool:
        token = self.config.token
        if not token or not self.config.token_verbs:
            return True
        got = _header(headers, "authorization") or ""
        scheme, _, cred = got.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(cred.strip().encode(),
                                                                  token.encode())

    def _verb_handler(self, verb: str) -> Callable[[bytes, Mapping[str, str]], Response]:
        model = {"filter": wire.ExtenderArgs, "prioritize": wire.ExtenderArgs,
                 "bind": wire.ExtenderBindingArgs, "preempt": wire.ExtenderPreemptionArgs}[verb]

        lists = model is wire.ExtenderArgs  # filter, prioritize: a NodeNames list

        if lists:
            # One at a time, from decoding to encoding. They are CPU work from end to end
            # (bind and preempt may wait on the API server, and are not serialised): with
            # several connections, threads that decode or encode while another holds the
            # extender's lock only contend for the GIL, which cost about a third of the
            # server's CPU at 10,000 nodes and four connections.
            def serial(body: bytes, headers: Mapping[str, str]) -> Response:
                with self.cpu_lock:
                    return handle(body, headers)

        def handle(body: bytes, headers: Mapping[str, str]) -> Response:
            if not self.authorised(headers):
                return _bad(401, "missing or wrong bearer token")
            names = None
            try:
                if lists:  # the same 10,000 names again: not decoded again
                    raw, names = self.names.loads(body)
                else:
                    raw = orjson.loads(body)  # 2x json's speed on 10,000-name lists
            except (orjson.JSONDecodeError, RecursionError) as e:
                return _bad(400, f"invalid JSON: {e}")
            try:
                args = wire.parse(model, raw)
                if lists:
                    if names is not None:
                        args.node_names = names
                    else:
                        self.names.remember(args.node_names)
                result = getattr(self.extender, verb)(args)
                passed = result.get("NodeNames") if verb == "filter" and \
                    isinstance(result, dict) else None
                if passed is not None:
                    # prioritize asks about the nodes that passed: kept, and its
                    # encoding (kept with it) is the answer's bulk
                    encoded = self.names.remember(passed)
                    if encoded is not None:
                        return Response(200, wire.filter_json(result, encoded))
            except wire.WireError as e:
                return _bad(400, f"invalid {model.__name__}: {e}", e.field)
            except RecursionError:
                return _bad(400, "request nested too deeply")
            except Exception as e:
                log.exception("%s failed", verb)
                from gsched.scheduler.extender.answers import error_result

                result = error_result(verb, f"gsched {verb} failed: {e}",
                                      locals().get("args"))
            return _json(200, result)

        return serial if lists else handle


def _wrap_extra(handler: Handler) -> Callable[[bytes, Mapping[str, str]], Response]:
    def call(body: bytes, headers: Mapping[str, str]) -> Response:
        status, out = handler(body, headers)
        if isinstance(out, bytes | bytearray):
            return Response(status, bytes(out), "application/octet-stream")
        return _json(status, out)
    return call


def _header(headers: Mapping[str, str], name: str) -> str | None:
    want = name.lower()
    for k, v in headers.items():
        if k.lower() == want:
            return v
    return None


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "gsched"
    sys_version = ""
    # Malformed request lines are answered with a status line too (not HTTP/0.9 bare).
    default_request_version = "HTTP/1.0"
    error_content_type = JSON
    error_message_format = '{"error": "%(code)d %(message)s", "field": ""}'
    app: App  # set on the subclass made per server
    #: the event loop already sent `100 Continue` for this request (it reads the body
    #: before the handler runs)
    continued = False

    def parse_request(self) -> bool:
        return http11.parse_request(self)

    def handle_expect_100(self) -> bool:
        return True if self.continued else super().handle_expect_100()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.debug("%s " + format, self.address_string(), *args)

    def _send(self, resp: Response) -> None:
        """The status line, headers and body in one write (two for a large body), as
        `send_response` + `send_header` + `end_headers` would send them, with the Date
        header formatted once a second."""
        self.log_request(resp.status)
        phrase = self.responses[resp.status][0] if resp.status in self.responses else ""
        head = (f"{self.protocol_version} {resp.status} {phrase}\r\n"
                f"Server: {self.version_string()}\r\nDate: {http11.http_date()}\r\n"
                f"Content-Type: {resp.content_type}\r\nContent-Length: {len(resp.body)}\r\n"
                + ("Connection: close\r\n" if resp.close else "") + "\r\n").encode("latin-1")
        if resp.close:
            self.close_connection = True
        if self.command == "HEAD":
            self.wfile.write(head)
        elif len(resp.body) <= http11.ONE_WRITE:
            self.wfile.write(head + resp.body)
        else:  # not worth copying a large body to save a system call
            self.wfile.write(head)
            self.wfile.write(resp.body)

    def _dispatch(self) -> None:
        app = self.app
        body = b""
        if self.command in ("POST", "PUT", "PATCH"):
            length = self.headers.get("Content-Length")
            if length is None:
                if self.headers.get("Transfer-Encoding"):
                    self._send(Response(411, b'{"error":"Content-Length required",'
                                             b'"field":""}', close=True))
                    return
                length = "0"
            try:
                n = int(length)
                if n < 0:
                    raise ValueError
            except ValueError:
                self._send(Response(400, b'{"error":"bad Content-Length","field":""}',
                                    close=True))
                return
            if n > app.config.max_body_bytes:
                app.metrics.requests.labels(verb="oversize", code="413").inc()
                self._send(_bad(413, f"body of {n} bytes is over the limit of "
                                     f"{app.config.max_body_bytes}"))
                self.close_connection = True
                return
            body = self.rfile.read(n)
            if len(body) < n:  # the client went away mid-body
                self.close_connection = True
                return
        self._send(app.handle(self.command, self.path, self.headers, body))

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _dispatch

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except (ConnectionError, TimeoutError, ssl.SSLError, OSError):
            self.close_connection = True


class ExtenderServer:
    """Listens in a background thread; `start()`, `url`, `stop()`."""

    def __init__(self, extender: Any, metrics: SchedulerMetrics,
                 config: ServerConfig | None = None,
                 extra_routes: Mapping[tuple[str, str], Handler] | None = None,
                 ready: Callable[[], bool] | None = None) -> None:
        self.config = config or ServerConfig()
        self.app = App(extender, metrics, self.config, extra_routes, ready)
        tls = None
        if self.config.tls_cert is not None:
            tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            tls.minimum_version = ssl.TLSVersion.TLSv1_2
            tls.load_cert_chain(str(self.config.tls_cert), str(self.config.tls_key))
            if self.config.tls_client_ca is not None:
                tls.verify_mode = ssl.CERT_REQUIRED
                tls.load_verify_locations(cafile=str(self.config.tls_client_ca))
        handler = type("Handler", (_RequestHandler,), {"app": self.app})
        inline = self.app.inline_paths
        self.httpd = EventLoopServer((self.config.host, self.config.port), handler, tls,
                                     self.config.idle_timeout_s, self.config.max_body_bytes,
                                     lambda method, path: method == "POST" and path in inline)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def url(self) -> str:
        scheme = "https" if self.httpd.tls is not None else "http"
        host = self.config.host if self.config.host not in ("", "0.0.0.0", "::") \
            else "127.0.0.1"
        return f"{scheme}://{host}:{self.port}"

    def start(self) -> ExtenderServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="gsched-http",
                                        kwargs={"poll_interval": 0.2}, daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever(poll_interval=0.2)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
