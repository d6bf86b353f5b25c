"""The event-loop front end (`eventloop.py`): it frames each request exactly as far as
the request handler reads it, answers pipelined requests in order, keeps filter and
prioritize answering while a slow route waits in the pool, sends `100 Continue`, and
closes silent connections."""

from __future__ import annotations

import io
import json
import socket
import threading
import time

from extender_util import extender_args, k8s_pod, make_server, small_cluster
from hypothesis import given, settings
from hypothesis import strategies as st
from test_extender_lean_http import LINES, REQUEST_LINES

from gsched.scheduler.extender.eventloop import CONTINUE, frame
from gsched.scheduler.extender.metrics import SchedulerMetrics
from gsched.scheduler.extender.server import App, ExtenderServer, ServerConfig, _RequestHandler
from gsched.scheduler.extender.verbs import Extender
from gsched.scheduler.policies.registry import make_policy

MAX_BODY = 64


def handler_reads(raw: bytes) -> tuple[int, bool]:
    """(bytes the server's request handler reads for its first request, whether it then
    closes the connection), from `raw` followed by the end of input."""
    handler = type("Handler", (_RequestHandler,), {"app": APP})
    h = handler.__new__(handler)
    h.rfile, h.wfile = io.BytesIO(raw), io.BytesIO()
    h.client_address, h.close_connection = ("127.0.0.1", 0), True
    h.handle_one_request()
    return h.rfile.tell(), bool(h.close_connection)


#: the server's request handling without a socket (a body over MAX_BODY is refused)
APP = App(Extender(small_cluster(), make_policy("binpack")), SchedulerMetrics(),
          ServerConfig(port=0, max_body_bytes=MAX_BODY))


@settings(max_examples=400, deadline=None)
@given(line=st.just(b"POST /filter HTTP/1.1") | REQUEST_LINES,  # half of them POSTs
       headers=st.lists(LINES | st.binary(max_size=30), max_size=8),
       length=st.sampled_from([None, b"0", b"7", b"12", b"65", b"-1", b"x", b" 5 "]),
       crlf=st.booleans(), body=st.binary(max_size=20),
       more=st.sampled_from([b"", b"GET /healthz HTTP/1.1\r\n\r\n"]))
def test_a_frame_ends_where_the_handler_stops_reading(line, headers, length, crlf, body,
                                                       more):
    eol = b"\r\n" if crlf else b"\n"
    head = [line] + headers + ([b"Content-Length: " + length] if length else [])
    raw = eol.join(head) + eol + eol + body + more
    f = frame(raw, MAX_BODY)
    read, closes = handler_reads(raw)
    if f.length is None:  # incomplete: the handler ran into the end of input
        assert read == len(raw)
    elif not closes:  # the connection goes on: the next request starts right there
        assert read == f.length
    else:  # it closes: the frame covers at least what the handler read
        assert f.length >= read


def test_an_incomplete_request_waits_for_its_body_and_its_line():
    assert frame(b"POST /filter HTTP/1.1\r\nContent-Length: 5\r\n\r\nab", 100).length is None
    assert frame(b"POST /filter HTTP/1.1\r\nHost: x\r\n", 100).length is None
    assert frame(b"POST /filt", 100).length is None
    f = frame(b"POST /filter HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
              100)
    assert f.length is None and f.expect_continue
    over = b"POST /filter HTTP/1.1\r\nContent-Length: 500\r\n\r\n"  # 413 at once, no body read
    assert frame(over + b"{", 100).length == len(over)


def read_answer(sock: socket.socket, buf: bytes = b"") -> tuple[int, bytes, bytes]:
    """(status, body, bytes after it) of the next answer on `sock`."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, "closed"
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")))
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "closed"
        rest += chunk
    return int(head.split(b" ")[1]), rest[:length], rest[length:]


def request(path: str, body: bytes, extra: str = "") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
            ).encode() + body


def test_pipelined_requests_are_answered_in_order():
    srv, _, _ = make_server()
    try:
        body = json.dumps(extender_args(k8s_pod(gpus=1), ["a100-0", "t4"], cache=True))
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\n\r\n" + request("/filter", body.encode())
                      + b"GET /readyz HTTP/1.1\r\n\r\n")
            status, first, rest = read_answer(s)
            assert (status, json.loads(first)) == (200, {"ok": True})
            status, second, rest = read_answer(s, rest)
            assert status == 200 and json.loads(second)["NodeNames"] == ["a100-0", "t4"]
            status, third, _ = read_answer(s, rest)
            assert (status, json.loads(third)) == (200, {"ready": True})
    finally:
        srv.stop()


def test_filter_answers_while_a_slow_route_waits_in_the_pool():
    release = threading.Event()

    def slow(body, headers):
        release.wait(10)
        return 200, {"slow": True}

    metrics = SchedulerMetrics()
    ext = Extender(small_cluster(), make_policy("binpack"), metrics=metrics)
    srv = ExtenderServer(ext, metrics, ServerConfig(port=0),
                         extra_routes={("POST", "/slow"): slow}).start()
    try:
        body = json.dumps(extender_args(k8s_pod(gpus=1), ["a100-0", "t4"], cache=True))
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as a, \
                socket.create_connection(("127.0.0.1", srv.port), timeout=10) as b:
            a.sendall(request("/slow", b"{}"))
            b.sendall(request("/filter", body.encode()))
            status, out, _ = read_answer(b)  # while /slow still waits
            assert status == 200 and json.loads(out)["NodeNames"] == ["a100-0", "t4"]
            assert not release.is_set()
            release.set()
            status, out, _ = read_answer(a)
            assert (status, json.loads(out)) == (200, {"slow": True})
    finally:
        release.set()
        srv.stop()


def test_expect_100_continue_gets_continue_before_the_body():
    srv, _, _ = make_server()
    try:
        body = json.dumps(extender_args(k8s_pod(gpus=1), ["a100-0"], cache=True)).encode()
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            s.sendall(request("/filter", b"", "Expect: 100-continue\r\n").replace(
                b"Content-Length: 0", f"Content-Length: {len(body)}".encode()))
            got = b""
            while len(got) < len(CONTINUE):
                got += s.recv(len(CONTINUE) - len(got))
            assert got == CONTINUE
            s.sendall(body)
            status, out, rest = read_answer(s)
            assert status == 200 and json.loads(out)["NodeNames"] == ["a100-0"]
            assert not rest  # one 100 Continue, not a second one inside the answer
    finally:
        srv.stop()


def test_a_silent_connection_is_closed_after_the_idle_timeout():
    srv, _, _ = make_server(config=ServerConfig(port=0, idle_timeout_s=0.2))
    try:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            s.sendall(b"POST /filter HTTP/1.1\r\nContent-Length: 10\r\n\r\n{")  # stalls
            t = time.monotonic()
            assert s.recv(100) == b""  # closed by the server, no answer
            assert time.monotonic() - t < 9  # (the client's own timeout is 10 s)
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\n\r\n")
            assert read_answer(s)[0] == 200  # the server goes on
    finally:
        srv.stop()


def test_a_reset_connection_is_dropped_and_the_server_goes_on():
    import struct

    srv, _, _ = make_server()
    try:
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        s.sendall(b"POST /filter HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()  # RST: the server's next read fails
        deadline = time.monotonic() + 9
        while srv.httpd._conns and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not srv.httpd._conns  # dropped, not kept (nor spun on)
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s2:
            s2.sendall(b"GET /healthz HTTP/1.1\r\n\r\n")
            assert read_answer(s2)[0] == 200
    finally:
        srv.stop()
