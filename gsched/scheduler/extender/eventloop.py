"""One thread that serves every connection: the extender's HTTP front end.

kube-scheduler keeps a few connections open and sends filter and prioritize on them back
to back. Those two verbs are CPU work from end to end, serialised by the extender's lock,
so a thread per connection only adds threads fighting for the GIL: at 10,000 nodes and
four connections that fight cost about a quarter of the server's CPU (measured:
`docs/benchmarks.md`, the extender's fifth pass). Here one thread multiplexes every
socket (`selectors`), answers filter and prioritize itself, and hands every other route
(bind and preempt may wait on the API server, mounted routes on SQLite) to a small pool,
whose answers come back to the loop through a queue and a wake-up socket.

The loop only *frames* requests: it finds where the next one ends (`frame`), exactly as
far as the request handler will read it, and gives those bytes to the same handler the
threaded server used (`server._RequestHandler`, over an in-memory file), so request
parsing, limits, error answers and keep-alive stay what `http11` and its tests define.
A connection's requests are answered in order, one at a time; at end of input whatever
is left is handed to the handler as it stands (as a blocking read would have seen it).
TLS is served on the same loop with non-blocking handshakes; a connection silent for
`idle_timeout_s` (mid-request too) is closed.
"""

from __future__ import annotations

import contextlib
import io
import logging
import queue
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from gsched.scheduler.extender import http11

log = logging.getLogger(__name__)

_MAX_LINE, _MAX_HEADERS = 65536, 100  # the handler's limits (http.client's)
_RECV = 1 << 20
_BODY_METHODS = ("POST", "PUT", "PATCH")  # the methods whose body the handler reads
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class Frame:
    """Where the next request in a buffer ends (`length`, None until more bytes come),
    whether its client waits for `100 Continue` before sending the body, and (`need`,
    0 if unknown) how long the buffer must grow for it: the headers are not parsed
    again while its body arrives."""

    __slots__ = ("length", "expect_continue", "need")

    def __init__(self, length: int | None, expect_continue: bool = False,
                 need: int = 0) -> None:
        self.length, self.expect_continue, self.need = length, expect_continue, need


def frame(buf: bytes | bytearray, max_body: int) -> Frame:
    """How many bytes of `buf` the request handler reads for its next request.

    A request whose handling ends in an error before its body (a bad request line, a
    header line too long, too many headers, a bad or too large Content-Length) ends
    where the handler stops reading; it then closes the connection, so what follows is
    never read. Otherwise: the request line, the headers up to the blank line, and for
    POST / PUT / PATCH the Content-Length bytes of body."""
    nl = buf.find(b"\n", 0, _MAX_LINE + 1)
    if nl < 0:
        return Frame(len(buf) if len(buf) > _MAX_LINE else None)  # 414 past the limit
    words = bytes(buf[:nl + 1]).decode("iso-8859-1").rstrip("\r\n").split()
    if not 2 <= len(words) <= 3:
        return Frame(nl + 1)  # nothing (no words) or 400, before any header is read
    if len(words) == 3:
        number = http11.http_version(words[2])
        if number is None or number >= (2, 0):
            return Frame(nl + 1)  # 400 / 505
    elif words[0] != "GET":
        return Frame(nl + 1)  # HTTP/0.9 other than GET: 400
    pos, lines = nl + 1, 0
    while True:
        end = buf.find(b"\n", pos, pos + _MAX_LINE + 1)
        if end < 0:
            return Frame(len(buf) if len(buf) - pos > _MAX_LINE else None)  # 431
        lines += 1
        if lines > _MAX_HEADERS:
            return Frame(end + 1)  # 431: too many headers
        if end - pos == 0 or (end - pos == 1 and buf[pos] == 0x0D):  # the blank line
            head_end = end + 1
            break
        pos = end + 1
    if words[0] not in _BODY_METHODS:
        return Frame(head_end)
    headers = http11.parse_headers(io.BytesIO(bytes(buf[nl + 1:head_end])))
    length = headers.get("Content-Length")
    if length is None:
        return Frame(head_end)  # no body, or 411 with Transfer-Encoding
    try:
        n = int(length)
    except ValueError:
        return Frame(head_end)  # 400
    if n < 0 or n > max_body:
        return Frame(head_end)  # 400 / 413
    if len(buf) < head_end + n:
        expect = (len(words) == 3 and words[2] >= "HTTP/1.1"
                  and headers.get("Expect", "").lower() == "100-continue")
        return Frame(None, expect, head_end + n)
    return Frame(head_end + n)


class _Output:
    """The handler's `wfile`: keeps what it writes, in order, for the loop to send."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.chunks.append(data if type(data) is bytes else bytes(data))
        return len(data)

    def flush(self) -> None:
        pass


class _Conn:
    __slots__ = ("sock", "addr", "buf", "out", "busy", "eof", "closing", "last",
                 "handshaking", "continued", "events", "need")

    def __init__(self, sock: socket.socket, addr: Any, handshaking: bool) -> None:
        self.sock, self.addr = sock, addr
        self.buf = bytearray()
        self.out: list[memoryview] = []
        self.busy = False        # a request is being answered (in the pool)
        self.eof = False         # the client sent everything it will send
        self.closing = False     # close once `out` is sent
        self.last = time.monotonic()
        self.handshaking = handshaking
        self.continued = False   # `100 Continue` sent for the request being read
        self.events = 0
        self.need = 0            # bytes the request being read needs (0: not known)


class EventLoopServer:
    """Serves `handler` (a `BaseHTTPRequestHandler` class) on `addr` from one thread.

    `inline(method, path)` says which requests the loop answers itself (CPU work that
    never waits); the rest run on a pool of `workers` threads. `serve_forever()` runs the
    loop; `shutdown()` ends it from another thread; `server_close()` closes the socket."""

    def __init__(self, addr: tuple[str, int], handler: type, tls: ssl.SSLContext | None,
                 idle_timeout_s: float, max_body: int,
                 inline: Callable[[str, str], bool], workers: int = 16) -> None:
        self.handler, self.tls = handler, tls
        self.idle_timeout_s, self.max_body, self.inline = idle_timeout_s, max_body, inline
        family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.bind(addr)
            self.socket.listen(128)
        except OSError:
            self.socket.close()
            raise
        self.socket.setblocking(False)
        self.server_address = self.socket.getsockname()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gsched-http")
        self._done: queue.SimpleQueue[tuple[_Conn, list[bytes], bool]] = queue.SimpleQueue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel = selectors.DefaultSelector()
        self._conns: set[_Conn] = set()
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self._stopped.set()

    # ------------------------------------------------------------------ control
    def serve_forever(self, poll_interval: float = 0.5) -> None:
        self._stopped.clear()
        self._stop.clear()
        sel = self._sel
        sel.register(self.socket, selectors.EVENT_READ, None)
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        try:
            while not self._stop.is_set():
                for key, mask in sel.select(timeout=min(poll_interval, 1.0)):
                    if key.data is None:
                        self._accept()
                    elif key.data == "wake":
                        with contextlib.suppress(OSError):
                            self._wake_r.recv(4096)
                        self._drain_done()
                    else:
                        try:
                            self._on_event(key.data, mask)
                        except Exception:  # a bug must not end the loop: only the
                            log.exception("connection from %s failed", key.data.addr)
                            self._close(key.data)  # connection ends
                self._close_idle()
        finally:
            for conn in list(self._conns):
                self._close(conn)
            with contextlib.suppress(KeyError, ValueError):
                sel.unregister(self.socket)
            with contextlib.suppress(KeyError, ValueError):
                sel.unregister(self._wake_r)
            self._stopped.set()

    def shutdown(self) -> None:
        """End `serve_forever` and wait for it (from another thread)."""
        self._stop.set()
        self._wake()
        self._stopped.wait(timeout=10)

    def server_close(self) -> None:
        self.socket.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # full: the loop is awake anyway
            self._wake_w.send(b"\0")

    # ------------------------------------------------------------------ sockets
    def _accept(self) -> None:
        while True:
            try:
                sock, addr = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # e.g. out of file descriptors: try again later
                log.warning("accept failed: %s", e)
                return
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            if self.tls is not None:
                try:
                    sock = self.tls.wrap_socket(sock, server_side=True,
                                                do_handshake_on_connect=False)
                except (ssl.SSLError, OSError) as e:
                    log.debug("TLS with %s failed: %s", addr, e)
                    sock.close()
                    continue
            conn = _Conn(sock, addr, handshaking=self.tls is not None)
            self._conns.add(conn)
            self._watch(conn, selectors.EVENT_READ)
            if conn.handshaking:
                self._handshake(conn)

    def _watch(self, conn: _Conn, events: int) -> None:
        if conn.events == events or conn not in self._conns:
            return
        if conn.events and events:
            self._sel.modify(conn.sock, events, conn)
        elif events:
            self._sel.register(conn.sock, events, conn)
        else:
            self._sel.unregister(conn.sock)
        conn.events = events

    def _close(self, conn: _Conn) -> None:
        if conn not in self._conns:
            return
        self._watch(conn, 0)
        self._conns.discard(conn)
        with contextlib.suppress(OSError):
            conn.sock.close()

    def _close_idle(self) -> None:
        limit = time.monotonic() - self.idle_timeout_s
        for conn in [c for c in self._conns if c.last < limit and not c.busy]:
            self._close(conn)

    def _handshake(self, conn: _Conn) -> None:
        try:
            conn.sock.do_handshake()  # type: ignore[attr-defined]
        except ssl.SSLWantReadError:
            self._watch(conn, selectors.EVENT_READ)
            return
        except ssl.SSLWantWriteError:
            self._watch(conn, selectors.EVENT_WRITE)
            return
        except (ssl.SSLError, OSError) as e:
            log.debug("TLS handshake with %s failed: %s", conn.addr, e)
            self._close(conn)
            return
        conn.handshaking = False
        self._watch(conn, selectors.EVENT_READ)

    def _on_event(self, conn: _Conn, mask: int) -> None:
        conn.last = time.monotonic()
        if conn.handshaking:
            self._handshake(conn)
            if conn.handshaking or conn not in self._conns:
                return
        if mask & selectors.EVENT_WRITE and conn.out:
            self._flush(conn)
            if conn not in self._conns or conn.out:
                return
        if mask & selectors.EVENT_READ or not conn.busy:
            self._read(conn)
        if conn in self._conns and not conn.busy and not conn.out:
            self._next(conn)

    def _read(self, conn: _Conn) -> None:
        """Take what the socket has (all of it: TLS may hold decrypted bytes back)."""
        while not conn.eof:
            try:
                data = conn.sock.recv(_RECV)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
                return
            except ssl.SSLWantWriteError:
                return
            except (ConnectionError, ssl.SSLError, OSError):
                conn.eof = conn.closing = True
                conn.buf.clear()
                return
            if not data:
                conn.eof = True
                return
            conn.buf += data

    def _flush(self, conn: _Conn) -> None:
        """Send what is queued; watch for writability while the socket is full."""
        while conn.out:
            chunk = conn.out[0]
            try:
                sent = conn.sock.send(chunk)
            except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError,
                    ssl.SSLWantReadError):
                self._watch(conn, selectors.EVENT_WRITE)
                return
            except (ConnectionError, ssl.SSLError, OSError):
                self._close(conn)
                return
            if sent < len(chunk):
                conn.out[0] = chunk[sent:]
            else:
                conn.out.pop(0)
        if conn.closing:
            self._close(conn)
        else:
            self._watch(conn, 0 if conn.eof else selectors.EVENT_READ)

    # ---------------------------------------------------------------- requests
    def _next(self, conn: _Conn) -> None:
        """Answer the connection's buffered requests, in order, until one is incomplete,
        goes to the pool, or closes the connection."""
        if conn.closing and not conn.out and not conn.busy:  # e.g. the socket failed
            self._close(conn)
            return
        while conn in self._conns and not conn.busy and not conn.out and not conn.closing:
            if not conn.buf:
                if conn.eof:
                    self._close(conn)
                else:
                    self._watch(conn, selectors.EVENT_READ)
                return
            if len(conn.buf) < conn.need and not conn.eof:  # its body is still coming
                self._watch(conn, selectors.EVENT_READ)
                return
            try:
                f = frame(conn.buf, self.max_body)
            except Exception:  # unreadable headers: the handler answers what it can
                f = Frame(len(conn.buf))
            conn.need = f.need
            if f.length is None and not conn.eof:
                if f.expect_continue and not conn.continued:
                    conn.continued = True
                    conn.out.append(memoryview(CONTINUE))
                    self._flush(conn)
                self._watch(conn, selectors.EVENT_READ)
                return
            size = len(conn.buf) if f.length is None else f.length  # (None: the last
            with memoryview(conn.buf) as view:  # request, cut short: the handler sees
                data = bytes(view[:size])       # the end)
            del conn.buf[:size]  # one copy of a 200 kB request, not three
            continued, conn.continued = conn.continued, False
            final = f.length is None
            if self.inline(*_method_path(data)):
                chunks, close = self._handle(conn, data, continued, final)
                self._answer(conn, chunks, close)
            else:
                conn.busy = True
                self._watch(conn, 0)
                self._pool.submit(self._pooled, conn, data, continued, final)

    def _pooled(self, conn: _Conn, data: bytes, continued: bool, final: bool) -> None:
        chunks, close = self._handle(conn, data, continued, final)
        self._done.put((conn, chunks, close))
        self._wake()

    def _drain_done(self) -> None:
        while True:
            try:
                conn, chunks, close = self._done.get_nowait()
            except queue.Empty:
                return
            conn.busy = False
            conn.last = time.monotonic()
            if conn in self._conns:
                self._answer(conn, chunks, close)
                if conn in self._conns and not conn.out:
                    self._read(conn)
                    self._next(conn)

    def _answer(self, conn: _Conn, chunks: list[bytes], close: bool) -> None:
        conn.out.extend(memoryview(c) for c in chunks if c)
        conn.closing = conn.closing or close
        self._flush(conn)

    def _handle(self, conn: _Conn, data: bytes, continued: bool, final: bool
                ) -> tuple[list[bytes], bool]:
        """(what the handler wrote, whether to close) for one request's bytes; with
        `final` (the client's last bytes) every request in them, as a connection
        handler reading to the end would answer them."""
        h = self.handler.__new__(self.handler)
        h.request, h.client_address, h.server = conn.sock, conn.addr, self
        h.rfile, h.wfile = io.BytesIO(data), _Output()
        h.continued = continued
        h.close_connection = True
        try:
            h.handle_one_request()
            while final and not h.close_connection:
                h.handle_one_request()
        except Exception:  # a bug must not end the loop: the connection ends instead
            log.exception("request from %s failed", conn.addr)
            return h.wfile.chunks, True
        return h.wfile.chunks, bool(h.close_connection) or final


def _method_path(data: bytes) -> tuple[str, str]:
    """The method and path of a request's first line ('' when it has none)."""
    line = data[:data.find(b"\n") + 1 or len(data)]
    words = line.decode("iso-8859-1").split()
    if len(words) < 2:
        return "", ""
    return words[0], words[1].split("?", 1)[0]
