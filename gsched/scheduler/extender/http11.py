"""Lean pieces of HTTP/1.1 for the extender's request handler.

`http.server.BaseHTTPRequestHandler` reads request headers with the email parser and
writes a response in several pieces; at 10,000 nodes and a few hundred requests a
second that cost about as much as a filter's policy work. These keep its behaviour
(the same checks, error answers, limits and header values) and take the short way for
the plain requests kube-scheduler sends: header lines of a token, a colon and a value
are read directly (anything else still goes to the email parser), and the Date header
is formatted once a second.
"""

from __future__ import annotations

import email.parser
import email.utils
import http.client
import re
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any

#: a header line the fast path takes: a token name, a colon, a value of visible
#: characters, spaces and tabs, CRLF or LF; any other line goes to the email parser
_PLAIN_HEADER = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[ \t]*[\x20-\x7e\t]*\r?\n")
_MAX_LINE, _MAX_HEADERS = 65536, 100  # http.client's limits


def parse_headers(fp: Any, _class: type = http.client.HTTPMessage) -> Any:
    """`http.client.parse_headers` for requests whose every header line is plain
    (`_PLAIN_HEADER`): the same message (names, values as the compat32 email parser
    leaves them: leading blanks and the line end stripped), the same errors for long
    lines and too many headers; anything else is parsed by the email parser."""
    lines = []
    while True:
        line = fp.readline(_MAX_LINE + 1)
        if len(line) > _MAX_LINE:
            raise http.client.LineTooLong("header line")
        lines.append(line)
        if len(lines) > _MAX_HEADERS:
            raise http.client.HTTPException(f"got more than {_MAX_HEADERS} headers")
        if line in (b"\r\n", b"\n", b""):
            break
    if lines[-1] == b"" or not all(_PLAIN_HEADER.fullmatch(x) for x in lines[:-1]):
        return email.parser.Parser(_class=_class).parsestr(
            b"".join(lines).decode("iso-8859-1"))
    msg = _class()
    for line in lines[:-1]:
        name, _, value = line.decode("iso-8859-1").partition(":")
        msg[name] = value.lstrip(" \t").rstrip("\r\n")
    return msg


def http_version(version: str) -> tuple[int, int] | None:
    """(major, minor) of `HTTP/x.y`, or None when malformed (as the base class reads
    it: one dot, digits only, at most ten of them each)."""
    if not version.startswith("HTTP/"):
        return None
    parts = version.split("/", 1)[1].split(".")
    if len(parts) != 2 or not all(p.isdigit() and len(p) <= 10 for p in parts):
        return None
    try:  # `isdigit` admits a few Latin-1 digits (superscripts) that `int` refuses
        return int(parts[0]), int(parts[1])
    except ValueError:
        return None


ONE_WRITE = 64 << 10
_date: tuple[int, str] = (0, "")


def http_date() -> str:
    """The Date header's value (RFC 9110 IMF-fixdate), formatted once per second."""
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, email.utils.formatdate(now, usegmt=True))
    return _date[1]


def parse_request(h: BaseHTTPRequestHandler) -> bool:
    """`BaseHTTPRequestHandler.parse_request` for handler `h` (the same checks, answers
    and state), with the headers read by `parse_headers`."""
    h.command = None  # type: ignore[assignment]  # until the request line is read
    h.request_version = version = h.default_request_version
    h.close_connection = True
    h.requestline = requestline = str(h.raw_requestline, "iso-8859-1").rstrip("\r\n")
    words = requestline.split()
    if not words:
        return False
    if len(words) >= 3:  # enough to determine the protocol version
        version = words[-1]
        number = http_version(version)
        if number is None:
            h.send_error(HTTPStatus.BAD_REQUEST, f"Bad request version ({version!r})")
            return False
        if number >= (1, 1) and h.protocol_version >= "HTTP/1.1":
            h.close_connection = False
        if number >= (2, 0):
            h.send_error(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED,
                         f"Invalid HTTP version ({version.split('/', 1)[1]})")
            return False
        h.request_version = version
    if not 2 <= len(words) <= 3:
        h.send_error(HTTPStatus.BAD_REQUEST, f"Bad request syntax ({requestline!r})")
        return False
    command, path = words[:2]
    if len(words) == 2:
        h.close_connection = True
        if command != "GET":
            h.send_error(HTTPStatus.BAD_REQUEST,
                         f"Bad HTTP/0.9 request type ({command!r})")
            return False
    h.command, h.path = command, path
    if h.path.startswith("//"):  # never an absolute URI without a scheme
        h.path = "/" + h.path.lstrip("/")
    try:
        h.headers = parse_headers(h.rfile, h.MessageClass)
    except http.client.LineTooLong as err:
        h.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Line too long",
                     str(err))
        return False
    except http.client.HTTPException as err:
        h.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Too many headers",
                     str(err))
        return False
    conntype = h.headers.get("Connection", "").lower()
    if conntype == "close":
        h.close_connection = True
    elif conntype == "keep-alive" and h.protocol_version >= "HTTP/1.1":
        h.close_connection = False
    expect = h.headers.get("Expect", "")
    if (expect.lower() == "100-continue" and h.protocol_version >= "HTTP/1.1"
            and h.request_version >= "HTTP/1.1"):
        return bool(h.handle_expect_100())
    return True
