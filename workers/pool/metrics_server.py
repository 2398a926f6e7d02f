"""The HTTP server behind ``/metrics``: a socket costs a file descriptor, never a thread.

Anyone on the host may connect to the metrics port. prometheus_client's own server
gives every connection a thread and never times one out, so idle connections piled
up threads until the next fork of the pool failed under a task limit (issue 13).
Here one I/O thread multiplexes every socket with ``selectors`` and one render
thread builds the response bytes, whatever the number of connections:

    clients ──► I/O thread (accept, read request, write response, deadlines)
                    │ request complete              ▲ response bytes
                    ▼                               │ (wake-up socketpair)
                render thread (registry -> exposition text) ──┘

Bounds, each a constructor parameter (``None`` switches it off):

- ``timeout``: a request must arrive whole, and the response must be taken whole,
  within this many seconds of the phase's start; else the socket is closed. A
  deadline per phase, not per ``recv``, so a client trickling a byte a second is
  dropped too.
- ``max_connections``: beyond it a new connection is accepted and closed at once.
- ``max_request``: request heads larger than this are answered 431 and closed.

One response per connection (``Connection: close``), which is what Prometheus
does anyway.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import gzip
import logging
import queue
import resource
import selectors
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass, field

from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.registry import CollectorRegistry

from ltxpool.display import escape

__all__ = ["MetricsServer", "DEFAULT_TIMEOUT", "DEFAULT_MAX_CONNECTIONS", "is_loopback"]

log = logging.getLogger("ltxpool.metrics")

#: Seconds a client has to send its request, and again to read the response.
DEFAULT_TIMEOUT = 5.0
#: Connections served at once (further ones are closed on accept); lowered to half the
#: descriptor limit where that is smaller, so a flood never starves the pool of descriptors.
DEFAULT_MAX_CONNECTIONS = 256
_MAX_REQUEST = 16384
_ACCEPT_ERRORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def is_loopback(address: str) -> bool:
    """True if every address ``address`` binds to is a loopback one (127/8, ::1)."""
    try:
        infos = socket.getaddrinfo(address or None, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return False
    hosts = {str(info[4][0]) for info in infos}
    return bool(hosts) and all(host.startswith("127.") or host == "::1" for host in hosts)


def _descriptor_cap(wanted: int | None) -> int | None:
    if wanted is None:
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return wanted if soft == resource.RLIM_INFINITY else max(1, min(wanted, soft // 2))


@dataclass(eq=False)
class _Connection:
    sock: socket.socket
    deadline: float | None
    request: bytearray = field(default_factory=bytearray)
    response: memoryview | None = None


class MetricsServer:
    """Serves ``registry`` on ``address:port`` from two threads, with per-phase deadlines and a cap."""

    def __init__(
        self,
        registry: CollectorRegistry,
        address: str,
        port: int,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        max_connections: int | None = DEFAULT_MAX_CONNECTIONS,
        max_request: int = _MAX_REQUEST,
    ) -> None:
        self._registry = registry
        self._timeout = timeout
        self._cap = _descriptor_cap(max_connections)
        self._max_request = max_request
        family, _, _, _, where = socket.getaddrinfo(
            address or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        self._listener = socket.create_server(where[:2], family=family, backlog=128)
        self._listener.setblocking(False)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._connections: set[_Connection] = set()
        self._listening = False
        self._rendered: collections.deque[_Connection] = collections.deque()
        self._to_render: queue.SimpleQueue[_Connection | None] = queue.SimpleQueue()
        self._closing = False
        self._threads = [threading.Thread(target=self._io_loop, name="metrics-io", daemon=True),
                         threading.Thread(target=self._render_loop, name="metrics-render", daemon=True)]
        self.refused = 0
        self.timed_out = 0

    @property
    def port(self) -> int:
        """The bound port (the one the kernel chose when asked for 0)."""
        return int(self._listener.getsockname()[1])

    @property
    def open_connections(self) -> int:
        """Connections held right now (read from another thread: a snapshot)."""
        return len(self._connections)

    def start(self) -> None:
        """Start serving; the threads are daemons, so an exiting pool never waits for a client."""
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._listen(True)
        for thread in self._threads:
            thread.start()

    def close(self) -> None:
        """Stop both threads and close every socket."""
        self._closing = True
        self._to_render.put(None)
        self._wake_w.send(b"x")
        for thread in self._threads:
            thread.join(5)
        for conn in list(self._connections):
            self._drop(conn)
        self._selector.close()
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.close()

    # -- I/O thread -------------------------------------------------------------------

    def _listen(self, on: bool) -> None:
        if on and not self._listening:
            self._selector.register(self._listener, selectors.EVENT_READ)
        elif not on and self._listening:
            self._selector.unregister(self._listener)
        self._listening = on

    def _io_loop(self) -> None:
        while not self._closing:
            for key, _ in self._selector.select(self._wait()):
                if key.fileobj is self._listener:
                    self._accept()
                elif key.fileobj is self._wake_r:
                    self._collect_rendered()
                else:
                    conn: _Connection = key.data
                    if conn.response is None:
                        self._read(conn)
                    else:
                        self._write(conn)
            self._expire()

    def _wait(self) -> float | None:
        deadlines = [conn.deadline for conn in self._connections if conn.deadline is not None]
        return max(min(deadlines) - time.monotonic(), 0.0) if deadlines else None

    def _deadline(self) -> float | None:
        return None if self._timeout is None else time.monotonic() + self._timeout

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in _ACCEPT_ERRORS:
                    # Out of descriptors: stop accepting until a connection closes,
                    # rather than spin on a listener that stays readable.
                    self._listen(False)
                    return
                raise
            if self._cap is not None and len(self._connections) >= self._cap:
                self.refused += 1
                sock.close()
                continue
            sock.setblocking(False)
            conn = _Connection(sock, self._deadline())
            self._connections.add(conn)
            self._selector.register(sock, selectors.EVENT_READ, conn)

    def _read(self, conn: _Connection) -> None:
        try:
            data = conn.sock.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(conn)
            return
        conn.request += data
        if b"\r\n\r\n" in conn.request or b"\n\n" in conn.request:
            self._selector.unregister(conn.sock)
            conn.deadline = None  # rendering is our time, not the client's
            self._to_render.put(conn)
        elif len(conn.request) > self._max_request:
            self._respond(conn, _response(431, "text/plain", b"request header too large\n"))

    def _collect_rendered(self) -> None:
        with contextlib.suppress(BlockingIOError):
            self._wake_r.recv(4096)
        while self._rendered:
            conn = self._rendered.popleft()
            assert conn.response is not None
            conn.deadline = self._deadline()
            self._selector.register(conn.sock, selectors.EVENT_WRITE, conn)

    def _respond(self, conn: _Connection, response: bytes) -> None:
        conn.response = memoryview(response)
        conn.deadline = self._deadline()
        self._selector.modify(conn.sock, selectors.EVENT_WRITE, conn)

    def _write(self, conn: _Connection) -> None:
        assert conn.response is not None
        try:
            sent = conn.sock.send(conn.response)
        except BlockingIOError:
            return
        except OSError:
            self._drop(conn)
            return
        conn.response = conn.response[sent:]
        if not conn.response:
            self._drop(conn)

    def _expire(self) -> None:
        now = time.monotonic()
        for conn in [c for c in self._connections if c.deadline is not None and c.deadline <= now]:
            self.timed_out += 1
            self._drop(conn)

    def _drop(self, conn: _Connection) -> None:
        with contextlib.suppress(KeyError, ValueError):  # waiting for the render thread: not registered
            self._selector.unregister(conn.sock)
        conn.sock.close()
        self._connections.discard(conn)
        if not self._closing:
            self._listen(True)

    # -- render thread ----------------------------------------------------------------

    def _render_loop(self) -> None:
        while (conn := self._to_render.get()) is not None:
            conn.response = memoryview(self._render(bytes(conn.request)))
            self._rendered.append(conn)
            self._wake_w.send(b"x")

    def _render(self, request: bytes) -> bytes:
        """The whole HTTP response to one request head."""
        lines = request.decode("latin-1").splitlines()
        parts = lines[0].split() if lines else []
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return _response(400, "text/plain", b"bad request line\n")
        method, target, _ = parts
        if method not in ("GET", "HEAD"):
            return _response(405, "text/plain", b"only GET and HEAD\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        url = urllib.parse.urlsplit(target)
        if url.path == "/favicon.ico":
            return _response(200, "text/plain", b"")
        params = urllib.parse.parse_qs(url.query)
        registry = self._registry.restricted_registry(params["name[]"]) if "name[]" in params else self._registry
        try:
            encoder, content_type = choose_encoder(headers.get("accept", ""))
            body = encoder(registry)
        except Exception as exc:  # a collector's bug must not take the server thread down
            return _response(500, "text/plain", f"metrics failed: {escape(str(exc))}\n".encode())
        extra: tuple[tuple[str, str], ...] = ()
        if gzip_accepted(headers.get("accept-encoding", "")):
            body = gzip.compress(body)
            extra = (("Content-Encoding", "gzip"),)
        return _response(200, content_type, b"" if method == "HEAD" else body, extra, length=len(body))


_REASONS = {200: "OK", 400: "Bad Request", 405: "Method Not Allowed", 431: "Request Header Fields Too Large",
            500: "Internal Server Error"}


def _response(code: int, content_type: str, body: bytes, extra: tuple[tuple[str, str], ...] = (),
              length: int | None = None) -> bytes:
    head = [f"HTTP/1.1 {code} {_REASONS[code]}", f"Content-Type: {content_type}",
            f"Content-Length: {len(body) if length is None else length}", "Connection: close",
            *(f"{name}: {value}" for name, value in extra)]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
