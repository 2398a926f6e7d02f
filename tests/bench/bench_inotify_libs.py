"""Which inotify library discovery uses, by measurement: inotify_simple vs watchdog vs asyncinotify.

Run alone: ``python tests/bench/bench_inotify_libs.py [--quick] [--folders N] [--idle S]``
(or ``python -m tests.bench.bench_inotify_libs``; bench/ is not collected by pytest).

For each library, in a fresh forked child (so one library's memory and threads never
count against another's), on one tree of N folders (default 10,000: 100 x 100):

* add: seconds to watch every folder (watchdog: one recursive schedule on the root,
  its idiomatic use; the others: one ``add_watch`` per folder, as DatabaseWatch does);
* RSS: how far the resident set rose while adding (MiB, from VmRSS);
* threads: native threads the library started (``/proc/self/task``);
* idle CPU: user + system seconds of the whole process over S idle seconds (default
  10), the main thread waiting as a worker would (``select`` on the fd; watchdog:
  its own threads wait, the main thread sleeps);
* latency: file created -> event in hand, median and worst of 50, in ms.

watchdog's default mask includes IN_OPEN / IN_CLOSE_NOWRITE: its own listing of
10,000 folders after an overflow queues ~20,000 events, more than the default
``fs.inotify.max_queued_events`` (16,384), so it can overflow again while reconciling
(its log says "Inotify queue overflowed" over and over): that cost shows in its idle CPU.

The table ends with each library's ratio against inotify_simple, measured in the same run.
A library that is not installed is reported as such and skipped.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import queue
import random
import select
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

FORK = multiprocessing.get_context("fork")
CREATES = 50


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _cpu() -> float:
    times = os.times()
    return times.user + times.system


def make_tree(base: str, folders: int) -> list[str]:
    width = max(1, round(folders ** 0.5))
    made = []
    for outer in range(-(-folders // width)):
        for inner in range(width):
            if len(made) == folders:
                break
            path = os.path.join(base, f"o{outer:03}", f"i{inner:03}")
            os.makedirs(path)
            made.append(path)
    return made


class Subject:
    """One library under the same measurements: watch, wait idle, wait for one event."""

    name = ""

    def watch(self, root: str, folders: list[str]) -> None:
        raise NotImplementedError

    def idle(self, seconds: float) -> None:
        raise NotImplementedError

    def next_event(self, timeout: float) -> float | None:
        """perf_counter() when an event was in hand, None on timeout."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class InotifySimple(Subject):
    name = "inotify_simple"

    def watch(self, root: str, folders: list[str]) -> None:
        from inotify_simple import INotify, flags

        self.inotify = INotify(nonblocking=True)
        mask = flags.CREATE | flags.DELETE | flags.MODIFY | flags.MOVED_TO | flags.ONLYDIR
        for folder in [root, *folders]:
            self.inotify.add_watch(folder, mask)

    def idle(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            select.select([self.inotify], [], [], remaining)

    def next_event(self, timeout: float) -> float | None:
        if not select.select([self.inotify], [], [], timeout)[0]:
            return None
        self.inotify.read(timeout=0)
        return time.perf_counter()

    def close(self) -> None:
        self.inotify.close()


class AsyncInotify(Subject):
    name = "asyncinotify"

    def watch(self, root: str, folders: list[str]) -> None:
        from asyncinotify import Inotify, Mask

        # sync_timeout=0: sync_get() returns None when nothing is queued (it would block otherwise).
        self.inotify = Inotify(sync_timeout=0.0)
        mask = Mask.CREATE | Mask.DELETE | Mask.MODIFY | Mask.MOVED_TO | Mask.ONLYDIR
        for folder in [root, *folders]:
            self.inotify.add_watch(folder, mask)

    def idle(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            select.select([self.inotify.fd], [], [], remaining)

    def next_event(self, timeout: float) -> float | None:
        if not select.select([self.inotify.fd], [], [], timeout)[0]:
            return None
        while self.inotify.sync_get() is not None:
            pass
        return time.perf_counter()

    def close(self) -> None:
        self.inotify.close()


class Watchdog(Subject):
    name = "watchdog"

    def watch(self, root: str, folders: list[str]) -> None:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        events: queue.SimpleQueue[float] = queue.SimpleQueue()
        self.events = events

        class Handler(FileSystemEventHandler):
            def on_created(self, event: Any) -> None:
                events.put(time.perf_counter())

        self.observer = Observer()
        self.observer.schedule(Handler(), root, recursive=True)
        self.observer.start()

    def idle(self, seconds: float) -> None:
        time.sleep(seconds)

    def next_event(self, timeout: float) -> float | None:
        try:
            stamp = self.events.get(timeout=timeout)
        except queue.Empty:
            return None
        while True:
            try:
                self.events.get_nowait()
            except queue.Empty:
                return stamp

    def close(self) -> None:
        self.observer.stop()
        self.observer.join()


SUBJECTS: list[Callable[[], Subject]] = [InotifySimple, Watchdog, AsyncInotify]


def drain(subject: Subject, limit: float = 1.0) -> None:
    """Take what is queued, for at most ``limit`` s (a library caught in an overflow loop never runs dry)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and subject.next_event(0.01) is not None:
        pass


def measure(make: Callable[[], Subject], root: str, folders: list[str], idle: float, results: Any) -> None:
    subject = make()
    try:
        __import__({"inotify_simple": "inotify_simple", "watchdog": "watchdog.observers",
                    "asyncinotify": "asyncinotify"}[subject.name])
    except ImportError as exc:
        results.put({"name": subject.name, "missing": str(exc)})
        return
    threads, rss = _threads(), _rss_kib()
    start = time.perf_counter()
    subject.watch(root, folders)
    added = time.perf_counter() - start
    grown = (_rss_kib() - rss) / 1024
    started = _threads() - threads
    time.sleep(0.5)  # let a library's threads settle before the idle window
    drain(subject)
    cpu = _cpu()
    subject.idle(idle)
    idle_cpu = _cpu() - cpu
    latencies = []
    pick = random.Random(15)
    for index in range(CREATES):
        path = os.path.join(pick.choice(folders), f"f{index}.db")
        created = time.perf_counter()
        with open(path, "wb"):
            pass
        seen = subject.next_event(5.0)
        latencies.append(float("inf") if seen is None else (seen - created) * 1000)
        drain(subject, 0.1)
        os.unlink(path)
        drain(subject, 0.1)
    subject.close()
    results.put({"name": subject.name, "add_s": added, "rss_mib": grown, "threads": started,
                 "idle_cpu_s": idle_cpu, "latency_ms": statistics.median(latencies), "worst_ms": max(latencies)})


def run(folders: int, idle: float) -> list[dict[str, Any]]:
    base = tempfile.mkdtemp(prefix="bench-inotify-")
    try:
        made = make_tree(base, folders)
        rows = []
        for make in SUBJECTS:
            results = FORK.Queue()
            child = FORK.Process(target=measure, args=(make, base, made, idle, results))
            child.start()
            rows.append(results.get(timeout=600))
            child.join(60)
        return rows
    finally:
        shutil.rmtree(base, ignore_errors=True)


def table(rows: list[dict[str, Any]], folders: int, idle: float) -> str:
    base = next(row for row in rows if row["name"] == "inotify_simple")
    lines = [f"{folders} folders, {idle:g} s idle, {CREATES} creates; ratio = library / inotify_simple (same run)",
             f"{'library':<15} {'add s':>8} {'RSS MiB':>8} {'threads':>8} {'idle CPU s':>10} {'lat ms':>8}"
             f" {'worst ms':>9}   ratios add / RSS / idle CPU / latency"]
    for row in rows:
        if "missing" in row:
            lines.append(f"{row['name']:<15} not installed: {row['missing']}")
            continue

        def ratio(key: str, row: dict[str, Any] = row) -> str:
            return f"{row[key] / base[key]:.1f}x" if base[key] > 0 else "-"

        lines.append(f"{row['name']:<15} {row['add_s']:>8.3f} {row['rss_mib']:>8.1f} {row['threads']:>8}"
                     f" {row['idle_cpu_s']:>10.3f} {row['latency_ms']:>8.2f} {row['worst_ms']:>9.2f}"
                     f"   {ratio('add_s')} / {ratio('rss_mib')} / {ratio('idle_cpu_s')} / {ratio('latency_ms')}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 folders, 2 s idle")
    parser.add_argument("--folders", type=int, default=10_000)
    parser.add_argument("--idle", type=float, default=10.0)
    args = parser.parse_args(argv)
    folders, idle = (1000, 2.0) if args.quick else (args.folders, args.idle)
    print(table(run(folders, idle), folders, idle))


if __name__ == "__main__":
    main()
