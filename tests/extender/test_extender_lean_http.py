"""The extender's lean HTTP/1.1 (`http11`) behaves exactly as `BaseHTTPRequestHandler`.

The request handler reads plain header lines without the email parser and writes a
response in one piece; for any request line and header block, what it parses (method,
path, version, keep-alive, headers), which errors it answers and the bytes it writes
must be what the standard library's handler does.
"""

from __future__ import annotations

import io
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gsched.scheduler.extender import http11
from gsched.scheduler.extender.server import Response, _RequestHandler


class Bare(BaseHTTPRequestHandler):
    """A handler without a socket: the request from bytes, the answer into a buffer."""

    protocol_version = "HTTP/1.1"
    default_request_version = "HTTP/1.0"

    def __init__(self, raw: bytes) -> None:  # (no socket: BaseRequestHandler skipped)
        line, nl, rest = raw.partition(b"\n")
        self.raw_requestline = line + nl
        self.rfile, self.wfile = io.BytesIO(rest), io.BytesIO()
        self.client_address = ("127.0.0.1", 0)
        self.command, self.requestline, self.request_version = "", "", "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def date_time_string(self, timestamp: float | None = None) -> str:
        return "Wed, 02 Dec 2026 12:00:00 GMT"


def outcome(raw: bytes, parse: Any) -> tuple:
    h = Bare(raw)
    ok = parse(h)
    headers = list(h.headers.items()) if ok and getattr(h, "headers", None) else None
    return (ok, h.command, getattr(h, "path", None), h.request_version, h.close_connection,
            headers, h.wfile.getvalue(), h.rfile.read())


LINES = st.sampled_from([
    b"Host: 127.0.0.1", b"Content-Type: application/json", b"Content-Length: 12",
    b"content-length:7", b"X-Empty:", b"X-Pad:   spaced out   ", b"X-Tab:\tt",
    b"Connection: close", b"Connection: keep-alive", b"Connection: Keep-Alive",
    b"Expect: 100-continue", b"Authorization: Bearer abc", b" folded continuation",
    b"\tfolded tab", b"NoColonHere", b"Bad Name: v", b"X-Latin: caf\xe9", b": no name",
    b"X-Ctl: a\x01b", b"Host: twice", b"From nobody", b"X-Colon: a:b:c", b""])
REQUEST_LINES = st.sampled_from([
    b"POST /filter HTTP/1.1", b"GET /healthz HTTP/1.0", b"GET //metrics HTTP/1.1",
    b"GET /x", b"POST /x", b"PUT /a b HTTP/1.1", b"POST /filter HTTP/2.0",
    b"POST /filter HTTP/1", b"POST /filter HTTP/1.1.1", b"POST /filter HTTP/\xb2.1",
    b"POST /filter FTP/1.1", b"POST /filter HTTP/01.010", b"  ", b"", b"GET",
    b"POST /filter HTTP/1.1 extra"])


@settings(max_examples=400, deadline=None)
@given(line=REQUEST_LINES, headers=st.lists(LINES | st.binary(max_size=30), max_size=8),
       crlf=st.booleans(), tail=st.sampled_from([b"\r\n", b"\n", b""]),
       body=st.sampled_from([b"", b'{"a":1}']))
def test_requests_parse_as_the_standard_handler_parses_them(line, headers, crlf, tail,
                                                             body):
    end = b"\r\n" if crlf else b"\n"
    raw = line + end + b"".join(h.replace(b"\n", b"") + end for h in headers) + tail + body
    assert outcome(raw, http11.parse_request) == \
        outcome(raw, BaseHTTPRequestHandler.parse_request)


@pytest.mark.parametrize(("raw", "ok"), [
    (b"POST /f HTTP/1.1\r\nX: " + b"a" * 70000 + b"\r\n\r\n", False),  # a line too long
    (b"POST /f HTTP/1.1\r\n" + b"X: y\r\n" * 101 + b"\r\n", False),      # too many headers
    (b"POST /f HTTP/1.1\r\n" + b"X: y\r\n" * 99 + b"\r\n", True),        # just under
])
def test_header_limits_answer_as_the_standard_handler(raw, ok):
    got = outcome(raw, http11.parse_request)
    assert got == outcome(raw, BaseHTTPRequestHandler.parse_request)
    assert got[0] is ok


class Sender(_RequestHandler, Bare):
    """The server's handler, without a socket."""


@pytest.mark.parametrize("resp", [
    Response(200, b'{"Error":""}'), Response(413, b'{"error":"x"}', close=True),
    Response(200, b"[" + b"1," * 50_000 + b"1]"), Response(299, b"", "text/plain"),
    Response(200, b"# metrics\n", "text/plain; version=0.0.4")])
@pytest.mark.parametrize("command", ["POST", "HEAD"])
def test_a_response_is_the_bytes_the_standard_handler_writes(monkeypatch, resp, command):
    monkeypatch.setattr(http11, "http_date", lambda: "Wed, 02 Dec 2026 12:00:00 GMT")
    ours = Sender(b"POST /filter HTTP/1.1\r\n\r\n")
    ours.command = command
    ours.close_connection = False
    ours._send(resp)
    std = Bare(b"POST /filter HTTP/1.1\r\n\r\n")
    std.command, std.close_connection = command, False
    std.server_version, std.sys_version = ours.server_version, ours.sys_version
    std.send_response(resp.status)
    std.send_header("Content-Type", resp.content_type)
    std.send_header("Content-Length", str(len(resp.body)))
    if resp.close:
        std.send_header("Connection", "close")
    std.end_headers()
    if command != "HEAD":
        std.wfile.write(resp.body)
    assert ours.wfile.getvalue() == std.wfile.getvalue()
    assert ours.close_connection == std.close_connection == resp.close


def test_the_date_header_is_the_standard_format():
    from email.utils import parsedate_to_datetime

    assert parsedate_to_datetime(http11.http_date()).tzname() == "UTC"
    assert http11.http_date().endswith(" GMT")
