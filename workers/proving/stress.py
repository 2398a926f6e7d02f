"""The Litestream #670 race as a reproducible workload: N writers, one cleaner.

Writers make ``ops`` atomic writes each into one directory while a cleaner sweeps
``*.tmp`` every ``cleaner_interval`` seconds. With the lock, the cleaner is the
janitor (it sweeps inside ``DirLock.cleaning``) and no write can fail. With
``locked=False`` the cleaner deletes every ``*.tmp`` without a lock, as the cleanup in
#670 did, and writes fail at ``stat``/``rename`` with ENOENT: the control that proves
the locked run's zero is not luck.

Writers and the cleaner are processes (``fork`` start method, set explicitly) or
threads; each makes its own lock objects after it starts.
"""

from __future__ import annotations

import errno
import hashlib
import multiprocessing
import os
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from ltxpool.locks.dirlock import DirLock
from ltxpool.replica.atomic import write_atomic
from ltxpool.replica.directory import Directory
from ltxpool.replica.errors import AtomicWriteError
from ltxpool.replica.janitor import sweep_temp_files

__all__ = ["StressConfig", "StressReport", "run_stress", "payload_for", "final_name", "percentile"]

_RACE_STEPS = frozenset({"stat", "rename"})


@dataclass(frozen=True)
class StressConfig:
    directory: str
    writers: int = 10
    ops: int = 100
    size: int = 1024
    cleaner_interval: float = 0.0001
    processes: bool = True
    locked: bool = True


@dataclass
class StressReport:
    total: int
    succeeded: int
    failed: int
    race_errors: int
    success_rate: float
    elapsed: float
    writes_per_second: float
    errors: dict[str, int] = field(default_factory=dict)
    cleaner_sweeps: int = 0
    cleaner_busy: int = 0
    orphans_removed: int = 0
    janitor_wait_p50_ms: float = 0.0
    janitor_wait_p99_ms: float = 0.0
    janitor_wait_max_ms: float = 0.0
    writer_wait_p99_ms: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentile(values: list[float], fraction: float) -> float:
    """The value at ``fraction`` (0..1) of the sorted values, nearest rank; 0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def final_name(writer: int, op: int) -> str:
    return f"w{writer:03d}-{op:06d}.ltx"


def payload_for(writer: int, op: int, size: int) -> bytes:
    """Deterministic content for one write, so tests can check every file."""
    block = hashlib.blake2b(f"{writer}:{op}".encode()).digest()
    return (block * (size // len(block) + 1))[:size]


def _writer(index: int, config: StressConfig, results: Any) -> None:
    lock = DirLock(config.directory) if config.locked else None
    succeeded = 0
    errors: Counter[str] = Counter()
    race_errors = 0
    waits: list[float] = []
    try:
        for op in range(config.ops):
            path = os.path.join(config.directory, final_name(index, op))
            try:
                write_atomic(path, payload_for(index, op, config.size), lock)
            except AtomicWriteError as exc:
                errors[f"{exc.step}: {errno.errorcode.get(exc.errno or 0, exc.errno)}"] += 1
                race_errors += exc.errno == errno.ENOENT and exc.step in _RACE_STEPS
                continue
            succeeded += 1
            if lock is not None:
                waits.append(lock.last_wait)
    finally:
        if lock is not None:
            lock.close()
        results.put(("writer", succeeded, dict(errors), race_errors, waits))


def _cleaner(config: StressConfig, stop: Any, results: Any) -> None:
    lock = DirLock(config.directory) if config.locked else None
    directory = Directory.open(config.directory)
    sweeps = busy = removed = 0
    waits: list[float] = []
    try:
        while not stop.is_set():
            result = sweep_temp_files(directory, lock)
            sweeps += 1
            busy += result.busy
            removed += len(result.removed)
            if result.locked or result.busy:
                waits.append(result.waited)
            time.sleep(config.cleaner_interval)
    finally:
        if lock is not None:
            lock.close()
        results.put(("cleaner", sweeps, busy, removed, waits))


def run_stress(config: StressConfig, progress: Callable[[str], None] | None = None) -> StressReport:
    """Run the workload to the end and report what happened."""
    if config.processes:
        ctx = multiprocessing.get_context("fork")
        results: Any = ctx.Queue()
        stop: Any = ctx.Event()
        spawn: Callable[..., Any] = ctx.Process
    else:
        results = queue.Queue()
        stop = threading.Event()
        spawn = threading.Thread
    cleaner = spawn(target=_cleaner, args=(config, stop, results), name="cleaner")
    writers = [spawn(target=_writer, args=(i, config, results), name=f"writer-{i}") for i in range(config.writers)]
    start = time.monotonic()
    cleaner.start()
    for writer in writers:
        writer.start()
    report = StressReport(config.writers * config.ops, 0, 0, 0, 0.0, 0.0, 0.0)
    errors: Counter[str] = Counter()
    writer_waits: list[float] = []
    for done in range(1, config.writers + 1):
        _, succeeded, writer_errors, race_errors, waits = results.get()
        report.succeeded += succeeded
        report.race_errors += race_errors
        errors.update(writer_errors)
        writer_waits.extend(waits)
        if progress is not None:
            progress(f"writers done: {done}/{config.writers}")
    report.elapsed = time.monotonic() - start
    stop.set()
    _, report.cleaner_sweeps, report.cleaner_busy, report.orphans_removed, cleaner_waits = results.get()
    for worker in (*writers, cleaner):
        worker.join()
    report.failed = report.total - report.succeeded
    report.success_rate = report.succeeded / report.total if report.total else 1.0
    report.writes_per_second = report.succeeded / report.elapsed if report.elapsed else 0.0
    report.errors = dict(errors)
    report.janitor_wait_p50_ms = percentile(cleaner_waits, 0.50) * 1000
    report.janitor_wait_p99_ms = percentile(cleaner_waits, 0.99) * 1000
    report.janitor_wait_max_ms = max(cleaner_waits, default=0.0) * 1000
    report.writer_wait_p99_ms = percentile(writer_waits, 0.99) * 1000
    return report
