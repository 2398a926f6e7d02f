"""The supervisor: starts the pool, watches it, restarts what dies, stops it on a signal.

Data flow::

    SIGTERM/SIGINT/SIGHUP ──► handler notes it ──► byte on the wake-up pipe ─────┐
                                                                                  ▼
    ┌───────────────────────── supervisor process (Supervisor.run) ─────────────────────┐
    │  wait(every child's sentinel + every child's event pipe + the wake-up pipe)       │
    │     │ sentinel ready: a child died ─► Watcher.reconcile: log, back off, restart    │
    │     │ event pipe ready ─► Watcher.receive ─► PoolMetrics (counters)                │
    │     │ wake-up pipe ready ─► stop (SIGTERM to children, grace, SIGKILL) or reload   │
    │  threads: multiprocessing_logging feeder ─► stderr;  /metrics HTTP server        │
    └───────┬────────────────────────────────────────────────────────▲────────────────┘
       fork │ PoolConfig copied at fork                               │ events, one pipe per
            ▼                                                         │ child: busy/idle/heartbeat,
    worker-0 … worker-N-1 (roles.worker_main)   janitor (roles.janitor_main)   results, failures
                                 shipper (shipper.shipper_main, only with a [databases.remote]) ─► buckets
            │ log records ──► mp-logging queue ──► feeder thread in the supervisor ──► stderr
            ▼
    replica directories: claims keep workers off each other's level, the directory
    lock keeps the janitor off every write in flight (Litestream #670)

Layers, as in circus: this module is the arbiter (the loop, signals, stop, reload);
``ltxpool.pool.watcher`` keeps N copies of one role alive (restart policy, hang kills);
``ltxpool.pool.child`` is one child and nothing else. A child's whole life is one
function in ``ltxpool.pool.roles``.

A dead child is noticed at once through its sentinel, never by polling, and the
loop sleeps until the next thing it has to do (a restart after backoff, a hang
deadline, the end of the grace period). Signal handlers only note the signal;
``signal.set_wakeup_fd`` makes ``wait`` return, and the loop acts on it.

Stopping (SIGTERM, or SIGINT): children get SIGTERM, finish the item in hand (a
write in flight completes) and exit; whoever is still running after ``grace``
seconds gets SIGKILL. Any temp file a killed (or crashed) child left is removed
under the directory lock before the supervisor exits 0. A second SIGINT kills at once (exit
130). SIGHUP re-reads the config file (flags still win); a bad file is refused and
the running configuration stays; a changed one restarts the children with it.
A child that crash-loops makes the supervisor give up: it stops the others and
exits 1 with the reason. Deaths while busy on one replica do not count (issue 13):
they are charged to that replica (``ReplicaHolds``: its own exponential hold-off,
handed to every child forked after), so one tenant's replica cannot stop the pool
for the others. A fork that fails (EAGAIN under a task limit) is retried by the
watcher with backoff and logged; it never stops the pool either.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import secrets
import signal
import time
from collections.abc import Callable
from multiprocessing.connection import wait
from types import FrameType

from ltxpool.display import escape
from ltxpool.errors import LtxpoolError
from ltxpool.pool.child import ChildProcess
from ltxpool.pool.config import PoolConfig, setting_warnings
from ltxpool.pool.errors import CrashLoop
from ltxpool.pool.events import Compacted, Event
from ltxpool.pool.logging import set_format
from ltxpool.pool.metrics import PoolMetrics
from ltxpool.pool.replicas import replica_roots
from ltxpool.pool.roles import janitor_main, worker_main
from ltxpool.pool.schedule import ReplicaHolds
from ltxpool.pool.shipper import shipper_main
from ltxpool.pool.watcher import Watcher
from ltxpool.replica.directory import dir_lock
from ltxpool.replica.janitor import sweep_temp_files
from ltxpool.replica.layout import Replica

__all__ = ["Supervisor", "remove_orphans", "EXIT_OK", "EXIT_GAVE_UP", "EXIT_INTERRUPTED"]

EXIT_OK = 0
EXIT_GAVE_UP = 1
EXIT_INTERRUPTED = 130

#: After SIGKILL, how long to wait for the kernel to reap before giving up on a child.
_KILL_WAIT = 10.0

log = logging.getLogger("ltxpool.supervisor")


class Supervisor:
    """The arbiter: one loop over the watchers, the signals and the stop sequence."""

    def __init__(self, config: PoolConfig, metrics: PoolMetrics,
                 reload: Callable[[], PoolConfig] | None = None) -> None:
        self.config = config
        self.metrics = metrics
        self._reload = reload
        self._ctx = multiprocessing.get_context("fork")
        self.holds = ReplicaHolds()
        self.workers = Watcher("worker", config.workers, self._spawn_worker, config.restart,
                               on_restart=self._count_restart, on_hang_kill=self._count_hang_kill,
                               on_event=self._on_event, on_replica_death=self.holds.charge)
        self.janitor = Watcher("janitor", 1, self._spawn_janitor, config.restart,
                               on_restart=self._count_restart, on_hang_kill=self._count_hang_kill,
                               on_event=self._on_event, on_replica_death=self.holds.charge)
        # One shipper while some entry has a remote; the lease owner token is the pool's,
        # drawn once here, so a restarted shipper takes its own leases back (ltxpool.pool.shipper).
        self._owner_token = secrets.token_hex(8)
        self.shipper = Watcher("shipper", _shippers(config), self._spawn_shipper, config.restart,
                               on_restart=self._count_restart, on_hang_kill=self._count_hang_kill,
                               on_event=self._on_event, on_replica_death=self.holds.charge)
        self._signals: list[int] = []
        self._stopping: str | None = None
        self._exit_code = EXIT_OK
        self._deadline = math.inf
        self._sent_sigkill = False
        self._abandoned = False

    @property
    def watchers(self) -> tuple[Watcher, Watcher, Watcher]:
        return self.workers, self.janitor, self.shipper

    def _spawn_worker(self, name: str, index: int) -> ChildProcess:
        held_off = self.holds.remaining(time.monotonic())
        return ChildProcess(self._ctx, name, worker_main, (index, self.config, held_off),
                            self.config.restart.heartbeat_interval)

    def _spawn_janitor(self, name: str, index: int) -> ChildProcess:
        held_off = self.holds.remaining(time.monotonic())
        return ChildProcess(self._ctx, name, janitor_main, (self.config, held_off),
                            self.config.restart.heartbeat_interval)

    def _spawn_shipper(self, name: str, index: int) -> ChildProcess:
        return ChildProcess(self._ctx, name, shipper_main, (self.config, self._owner_token),
                            self.config.restart.heartbeat_interval)

    def _on_event(self, event: Event) -> None:
        if isinstance(event, Compacted):
            self.holds.clear(event.result.replica)
        self.metrics.record(event)

    def _count_restart(self, role: str) -> None:
        self.metrics.restarts.labels(role).inc()

    def _count_hang_kill(self, role: str) -> None:
        self.metrics.hang_kills.labels(role).inc()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals.append(signum)

    def run(self) -> int:
        """Run the pool until it is stopped; returns the process exit code."""
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        previous_fd = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        previous = {signum: signal.signal(signum, self._on_signal) for signum in handled}
        config = self.config
        log.info("starting: pid %d, %d workers, janitor every %g s, %d replicas, %d database entries, grace %g s",
                 os.getpid(), config.workers, config.janitor_interval, len(config.replicas), len(config.databases),
                 config.grace)
        for warning in setting_warnings(config):
            log.warning("%s", warning)
        try:
            return self._loop(wake_r)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            signal.set_wakeup_fd(previous_fd)
            os.close(wake_r)
            os.close(wake_w)

    def _loop(self, wake_r: int) -> int:
        wake, changed = 0.0, True
        while True:
            now = time.monotonic()
            if changed or now >= wake:
                try:
                    wake = self._reconcile(now)
                except CrashLoop as exc:
                    log.critical("giving up: %s; stopping the pool", exc)
                    self._begin_stop("crash loop", EXIT_GAVE_UP)
                    continue
                if self._stopping is not None and not any(watcher.running() for watcher in self.watchers):
                    return self._finish()
                if self._abandoned:
                    return self._exit_code or EXIT_GAVE_UP
            objects = [wake_r, *(item for watcher in self.watchers for item in watcher.wait_objects())]
            ready = wait(objects, None if wake == math.inf else max(wake - time.monotonic(), 0.0))
            if wake_r in ready:
                _drain(wake_r)
            for watcher in self.watchers:
                watcher.receive(ready)
            self._handle_signals()
            # Only a sentinel or the wake-up pipe (both plain descriptors) can change
            # what reconcile would do before ``wake``; events from a busy janitor
            # (one per replica) then cost no more than reading them.
            changed = any(isinstance(item, int) for item in ready)

    def _reconcile(self, now: float) -> float:
        """One idempotent pass over both roles, and the stop sequence; returns when to run again."""
        wake = min(watcher.reconcile(now, self._stopping is not None) for watcher in self.watchers)
        for watcher in self.watchers:
            self.metrics.children.labels(watcher.role).set(watcher.running())
        if self._stopping is None:
            return wake
        if now >= self._deadline:
            if self._sent_sigkill:
                log.error("children still not reaped %g s after SIGKILL; exiting without them", _KILL_WAIT)
                self._abandoned = True
                return 0.0
            self._kill_all(f"grace period of {self.config.grace:g} s is over")
        return min(wake, self._deadline)

    def _handle_signals(self) -> None:
        while self._signals:
            signum = self._signals.pop(0)
            name = signal.Signals(signum).name
            if signum == signal.SIGHUP:
                if self._stopping is None:
                    self._reload_config()
            elif self._stopping is None:
                self._begin_stop(name, EXIT_OK)
            elif signum == signal.SIGINT:
                self._exit_code = EXIT_INTERRUPTED
                self._kill_all("second SIGINT")
            else:
                log.info("%s: already stopping", name)

    def _begin_stop(self, reason: str, exit_code: int) -> None:
        self._stopping = reason
        self._exit_code = exit_code
        self._deadline = time.monotonic() + self.config.grace
        running = sum(watcher.running() for watcher in self.watchers)
        log.info("stopping (%s): %d children have %g s to finish their work", reason, running, self.config.grace)
        for watcher in self.watchers:
            watcher.stop_all()

    def _kill_all(self, why: str) -> None:
        for watcher in self.watchers:
            for child in watcher.kill_all():
                log.warning("%s: SIGKILL to %s (pid %d, %s)", why, child.name, child.pid, child.doing)
        self._sent_sigkill = True
        self._deadline = time.monotonic() + _KILL_WAIT

    def _finish(self) -> int:
        removed = remove_orphans(self.config)
        if removed:
            log.info("removed %d temp files left by killed children", removed)
        log.info("stopped (%s)", self._stopping)
        return self._exit_code

    def _reload_config(self) -> None:
        if self._reload is None:
            log.info("SIGHUP: no config file to reload; nothing changed")
            return
        try:
            new = self._reload()
        except LtxpoolError as exc:
            log.error("SIGHUP: reload refused, keeping the running configuration: %s", exc)
            return
        if new == self.config:
            log.info("SIGHUP: configuration unchanged")
            return
        if (new.metrics_port, new.metrics_address) != (self.config.metrics_port, self.config.metrics_address):
            log.warning("SIGHUP: a new metrics address takes effect at the next start")
        self.config = new
        set_format(new.log_format, new.log_level)
        self.workers.count = new.workers
        self.shipper.count = _shippers(new)
        for watcher in self.watchers:
            watcher.policy = new.restart
            watcher.stop_all()
        log.info("SIGHUP: configuration reloaded: %d workers, %d replicas; restarting the children with it",
                 new.workers, len(new.replicas))


def _shippers(config: PoolConfig) -> int:
    return 1 if config.ships_off_host else 0


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def remove_orphans(config: PoolConfig) -> int:
    """Sweep every level directory of every replica for orphaned temp files (the last act of a stop).

    Every replica: the configured ones and those of the databases found now
    (``replica_roots``), as the janitor's rounds do. Under the directory lock, as the
    janitor does: a write in flight by another program (``ltxpool replicate``) is never touched.
    """
    removed = 0
    for root in replica_roots(config):
        replica = Replica(root)
        for _level, directory in replica.safe_level_dirs():
            try:
                with directory, dir_lock(directory) as lock:
                    swept = sweep_temp_files(directory, lock, foreign_age=config.janitor.foreign_temp_age,
                                             timeout=config.janitor.cleaning_timeout)
            except LtxpoolError as exc:
                log.error("%s: could not remove temp files: %s", escape(directory.path), exc)
                continue
            removed += len(swept.removed)
    return removed
