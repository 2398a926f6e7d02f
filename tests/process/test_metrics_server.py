"""The metrics port under a flood of real sockets: threads stay bounded, idle sockets are dropped.

The flood that counts comes from ``nobody``, another local user, as a real process.
Each protection is shown with its control in the same test: prometheus_client's own
server (what ltxpool ran before issue 13) grows a thread per idle connection under
the same flood; our server built with ``timeout=None`` keeps idle sockets forever,
with ``max_connections=None`` holds every one of them.
"""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ltxpool.pool.metrics import PoolMetrics
from ltxpool.pool.metrics_server import MetricsServer
from ltxpool.replica.layout import Replica
from tests.support.synthetic import SyntheticStream
from tests.support.users import SYSTEM_PYTHON, User, start_as

FLOOD = 200

# nobody's flood: connect FLOOD idle sockets, one every 20 ms (prometheus_client's
# server has an accept backlog of 5, and a burst would only measure SYN retries),
# say so, and hold them until killed.
FLOOD_SOURCE = """
import socket, sys, time
held = []
for _ in range(int(sys.argv[2])):
    held.append(socket.create_connection(("127.0.0.1", int(sys.argv[1]))))
    time.sleep(0.02)
print("holding", len(held), flush=True)
time.sleep(600)
"""


def _registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("ltxpool_probe", "A counter the scrape must show", registry=registry).inc()
    return registry


def _scrape(port: int, timeout: float = 5.0) -> tuple[str, float]:
    started = time.monotonic()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as response:
        text = response.read().decode()
    return text, time.monotonic() - started


def _idle(port: int, count: int) -> list[socket.socket]:
    """``count`` connected sockets that never send a byte."""
    return [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]


def _closed_by_server(sock: socket.socket, within: float) -> bool:
    """True if the server closed ``sock`` (EOF or reset) within ``within`` seconds."""
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def _wait(condition: object, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


@pytest.fixture
def servers() -> Iterator[list[MetricsServer]]:
    started: list[MetricsServer] = []
    yield started
    for server in started:
        server.close()


def _serve(servers: list[MetricsServer], registry: CollectorRegistry, **limits: float | int | None) -> MetricsServer:
    server = MetricsServer(registry, "127.0.0.1", 0, **limits)  # type: ignore[arg-type]
    server.start()
    servers.append(server)
    return server


def _flood_as(user: User, port: int) -> subprocess.Popen[str]:
    flood = start_as(user, [SYSTEM_PYTHON, "-c", FLOOD_SOURCE, str(port), str(FLOOD)])
    assert flood.stdout is not None
    assert flood.stdout.readline() == f"holding {FLOOD}\n", flood.stderr.read() if flood.stderr else ""
    return flood


def _stop(flood: subprocess.Popen[str]) -> None:
    flood.kill()
    flood.wait()


def test_an_idle_flood_from_another_user_holds_no_thread_and_a_scrape_answers_at_once_unlike_a_thread_per_connection(
    servers: list[MetricsServer], nobody: User,
) -> None:
    server = _serve(servers, _registry())
    before = threading.active_count()
    flood = _flood_as(nobody, server.port)
    try:
        _wait(lambda: server.open_connections == FLOOD, "the server holds the flood")
        text, took = _scrape(server.port)
        assert "ltxpool_probe_total 1.0" in text
        assert took < 1.0
        assert threading.active_count() == before
    finally:
        _stop(flood)

    # Control: prometheus_client's server, which ltxpool ran before, gives each idle socket a thread.
    control, _ = start_http_server(0, "127.0.0.1", registry=_registry())
    before = threading.active_count()
    flood = _flood_as(nobody, control.server_address[1])
    try:
        _wait(lambda: threading.active_count() - before == FLOOD, "a thread per idle connection")
    finally:
        _stop(flood)
        control.shutdown()
        control.server_close()


def test_a_silent_or_trickling_client_is_dropped_after_the_timeout_and_kept_without_it(
    servers: list[MetricsServer],
) -> None:
    server = _serve(servers, _registry(), timeout=0.5)
    silent, trickling = _idle(server.port, 2)
    started = time.monotonic()
    with pytest.raises((BrokenPipeError, ConnectionResetError)):
        for _ in range(20):  # a byte every 0.2 s: each recv is quick, the request never completes
            trickling.send(b"G")
            time.sleep(0.2)
    assert time.monotonic() - started < 2.0
    assert _closed_by_server(silent, within=0.5)
    assert server.timed_out == 2

    control = _serve(servers, _registry(), timeout=None)
    (kept,) = _idle(control.port, 1)
    assert not _closed_by_server(kept, within=2.0)
    assert control.open_connections == 1
    kept.close()


class _Huge(Collector):
    """A response far larger than the socket buffers, so a client that reads nothing blocks the write."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("ltxpool_filler", "Bytes to fill socket buffers", labels=["n"])
        for n in range(20_000):  # 20,000 lines of 330 bytes: beyond a 4 MiB send buffer
            family.add_metric([f"{n:0300d}"], n)
        yield family


def test_a_client_that_reads_nothing_is_dropped_after_the_timeout_and_kept_without_it(
    servers: list[MetricsServer],
) -> None:
    held = []
    for timeout in (1.0, None):
        registry = CollectorRegistry()
        registry.register(_Huge())
        server = _serve(servers, registry, timeout=timeout)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: the window stays small
        sock.connect(("127.0.0.1", server.port))
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        held.append((server, sock))
    protected, control = held
    for server, _ in held:
        _wait(lambda s=server: s.open_connections == 1, "the request accepted")
    started = time.monotonic()
    _wait(lambda: protected[0].open_connections == 0, "the non-reading client dropped", timeout=30)
    assert protected[0].timed_out == 1
    time.sleep(max(2.0, time.monotonic() - started))  # as long again: rendering, then the write
    assert control[0].open_connections == 1
    for _, sock in held:
        sock.close()


def test_connections_beyond_the_cap_are_closed_at_once_and_all_are_held_without_it(
    servers: list[MetricsServer],
) -> None:
    server = _serve(servers, _registry(), timeout=None, max_connections=10)
    flood = _idle(server.port, 30)
    try:
        _wait(lambda: server.refused == 20, "20 connections refused")
        closed = [_closed_by_server(sock, within=0.2) for sock in flood]
        assert sum(closed) == 20
        assert server.open_connections == 10
    finally:
        for sock in flood:
            sock.close()

    control = _serve(servers, _registry(), timeout=None, max_connections=None)
    flood = _idle(control.port, 30)
    try:
        _wait(lambda: control.open_connections == 30, "every connection held")
        assert control.refused == 0
    finally:
        for sock in flood:
            sock.close()


def test_a_warning_at_start_when_bound_beyond_loopback_and_none_on_loopback(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="ltxpool.metrics")
    ports = []
    for address in ("127.0.0.1", "0.0.0.0"):
        server = PoolMetrics().serve(0, address, lambda: [], 3600.0)
        ports.append(server.port)
        server.close()
    (record,) = caplog.records
    assert record.getMessage() == (f"metrics server listens on 0.0.0.0:{ports[1]}, beyond loopback: anyone "
                                   "who can reach it reads every replica's path and state")


def _threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("Threads:"))


def test_the_running_pool_serves_a_scrape_under_the_flood_with_no_thread_more(tmp_path: Path, nobody: User) -> None:
    replica = tmp_path / "replica"
    SyntheticStream(Replica(replica)).run(2)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    pool = subprocess.Popen([sys.executable, "-m", "ltxpool.cli", "supervise", "--metrics-port", str(port),
                             str(replica)], stderr=subprocess.DEVNULL)
    try:
        _wait(lambda: _answers(port), "the pool's metrics server answers", timeout=30)
        before = _threads(pool.pid)
        flood = _flood_as(nobody, port)
        try:
            text, took = _scrape(port)
            assert f'ltxpool_replica_readable{{replica="{replica}"}} 1.0' in text
            assert took < 2.0
            assert _threads(pool.pid) == before
        finally:
            _stop(flood)
        pool.send_signal(signal.SIGTERM)
        assert pool.wait(30) == 0
    finally:
        pool.kill()
        pool.wait()


def _answers(port: int) -> bool:
    try:
        _scrape(port, timeout=1.0)
    except OSError:
        return False
    return True
