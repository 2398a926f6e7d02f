"""A small HTTP proxy in front of the S3 server that fails a share of the requests.

What a bucket over a real network does now and then, on purpose and counted:

* ``"500"``: HTTP 500 InternalError, the request never reaches the store;
* ``"503"``: HTTP 503 SlowDown (S3's throttling answer), likewise;
* ``"reset"``: the connection reset after the request was read, before it was sent on;
* ``"lost"``: the request reaches the store and is done there, then the connection is
  reset: the client never hears the answer (a PUT that succeeded looks failed);
* ``"cut"``: the answer is sent half way, then the connection reset (a GET's body
  breaks off).

``strip`` removes request headers before they reach the store: a store that ignores
``If-None-Match`` is moto behind a proxy that drops it. ``delay`` slows every request, a
failed one too (to kill a shipper between two parts; a store that fails slowly). Each
connection carries one request (the proxy answers ``Connection: close``), so a fault
never leaks into the next request.
The proxy reads whole requests and answers into memory: test-sized bodies only.
"""

from __future__ import annotations

import collections
import random
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

__all__ = ["FAULTS", "FaultyProxy", "faulty_proxy"]

FAULTS = ("500", "503", "reset", "lost", "cut")

_ERROR = (
    "HTTP/1.1 {status} {phrase}\r\nContent-Type: application/xml\r\nContent-Length: {length}\r\n"
    "Connection: close\r\n\r\n{body}"
)
_XML = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{message}</Message></Error>"


def _error(status: int, phrase: str, code: str, message: str) -> bytes:
    body = _XML.format(code=code, message=message)
    return _ERROR.format(status=status, phrase=phrase, length=len(body), body=body).encode()


def _reset(sock: socket.socket) -> None:
    with suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _read_head(stream: Any) -> bytes | None:
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        line = stream.readline(65536)
        if not line:
            return None
        head += line
    return head


class FaultyProxy:
    def __init__(self, upstream_port: int, *, share: float = 0.0, faults: tuple[str, ...] = FAULTS,
                 seed: int = 0, strip: tuple[str, ...] = (), delay: float = 0.0,
                 applies: Callable[[str, str], bool] = lambda method, target: True) -> None:
        self.upstream_port = upstream_port
        self.share = share
        self.faults = faults
        self.strip = {name.lower() for name in strip}
        self.delay = delay
        self.applies = applies
        self.counts: collections.Counter[str] = collections.Counter()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="s3-faulty-proxy", daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    @property
    def injected(self) -> int:
        return sum(n for kind, n in self.counts.items() if kind in FAULTS)

    def start(self) -> FaultyProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        with suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(5)

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _pick(self, method: str, target: str) -> str | None:
        with self._lock:
            if self.share and self.applies(method, target) and self._rng.random() < self.share:
                kind = self._rng.choice(self.faults)
                self.counts[kind] += 1
                return kind
            self.counts["forwarded"] += 1
            return None

    def _serve(self, client: socket.socket) -> None:
        try:
            self._serve_one(client)
        except OSError:
            pass
        finally:
            with suppress(OSError):
                client.close()

    def _serve_one(self, client: socket.socket) -> None:
        stream = client.makefile("rb")
        head = _read_head(stream)
        if head is None:
            return
        lines = head.decode("latin-1").split("\r\n")
        method, target = lines[0].split(" ")[:2]
        headers = [tuple(part.strip() for part in line.split(":", 1)) for line in lines[1:] if line]
        names = {name.lower(): value for name, value in headers}
        if names.get("expect", "").lower() == "100-continue":
            client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = stream.read(int(names.get("content-length", "0")))
        kind = self._pick(method, target)
        if self.delay:
            time.sleep(self.delay)
        if kind == "500":
            client.sendall(_error(500, "Internal Server Error", "InternalError", "injected by the test proxy"))
            return
        if kind == "503":
            client.sendall(_error(503, "Slow Down", "SlowDown", "Please reduce your request rate (test proxy)."))
            return
        if kind == "reset":
            _reset(client)
            return
        kept = [(n, v) for n, v in headers if n.lower() not in self.strip | {"expect", "connection"}]
        request = lines[0] + "\r\n" + "".join(f"{n}: {v}\r\n" for n, v in kept) + "Connection: close\r\n\r\n"
        with socket.create_connection(("127.0.0.1", self.upstream_port), timeout=60) as upstream:
            upstream.sendall(request.encode("latin-1") + body)
            answer = b""
            while chunk := upstream.recv(1 << 16):
                answer += chunk
        if kind == "lost":
            _reset(client)
            return
        if kind == "cut":
            split = answer.find(b"\r\n\r\n") + 4
            client.sendall(answer[: split + (len(answer) - split) // 2])
            _reset(client)
            return
        client.sendall(answer)


@contextmanager
def faulty_proxy(upstream_port: int, **options: object) -> Iterator[FaultyProxy]:
    proxy = FaultyProxy(upstream_port, **options).start()  # type: ignore[arg-type]
    try:
        yield proxy
    finally:
        proxy.stop()
