"""Benchmark: ``ltxpool supervise`` over 1,000 replicas — idle CPU and scheduling delay.

Targets (issue 6): the idle pool uses < 5% of one core; p99 delay from a level
becoming due to its compaction starting < 2 s.

1. Makes ``--replicas`` replica directories, each with one level-0 file (TXID 1), and
   starts the pool on them (2 workers, Litestream's default intervals: level 1 every
   30 s) with JSON logs; waits until every replica has its first compactions.
2. Idle: ``--idle`` seconds with no new file; CPU (user + system) of the supervisor
   and its children, per minute and as a share of one core. A janitor round over
   every replica falls in this window.
3. Trickle: ``--rate`` level-0 files per second to random replicas for ``--trickle``
   seconds, then 35 s for the last ones to fall due. For every level-1 compaction of
   a file written in the trickle, the delay is the compaction's start (log time minus
   its duration) minus when level 1 became due: the later of the first new file's
   arrival (when its rename returned) and the previous level-1 file's time + 30 s.

Run alone: ``python -m tests.bench.bench_supervisor`` (about 4.5 minutes). Exit 0 when
both targets are met.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import psutil

from ltxpool.replica.layout import Replica
from tests.support.synthetic import SyntheticStream

LEVEL1_INTERVAL = 30.0
_COMPACTED = re.compile(r"^(?P<root>.+): compacted (?P<n>\d+) files into level (?P<level>\d+): "
                        r"TXID (?P<low>\d+)-(?P<high>\d+), \d+ bytes in (?P<seconds>[\d.]+) s$")


class Log:
    """The pool's JSON log lines, parsed as they arrive."""

    def __init__(self, stream: object) -> None:
        self.records: list[dict[str, object]] = []
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            try:
                self.records.append(json.loads(line))
            except json.JSONDecodeError:
                print(f"unparsed: {line.rstrip()}", file=sys.stderr)

    def compactions(self, level: int) -> list[tuple[dict[str, object], re.Match[str]]]:
        found = []
        for record in list(self.records):
            match = _COMPACTED.match(str(record["message"]))
            if match and int(match["level"]) == level:
                found.append((record, match))
        return found

    def problems(self) -> list[str]:
        return [f"{r['role']}: {r['message']}" for r in list(self.records) if r["level"] in ("WARNING", "ERROR",
                                                                                             "CRITICAL")]


def tree_cpu(pid: int) -> float:
    """User + system CPU seconds of the supervisor and its children."""
    parent = psutil.Process(pid)
    total = 0.0
    for process in [parent, *parent.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--idle", type=float, default=60.0, help="seconds of idle measurement")
    parser.add_argument("--trickle", type=float, default=120.0, help="seconds of arriving files")
    parser.add_argument("--rate", type=float, default=10.0, help="level-0 files per second in the trickle")
    parser.add_argument("--dir", default=None, help="where to make the replicas (default: system temp)")
    args = parser.parse_args()

    base = tempfile.mkdtemp(prefix="ltxpool-bench-supervisor-", dir=args.dir)
    try:
        return run(args, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def run(args: argparse.Namespace, base: str) -> int:
    rng = random.Random(1)
    streams: list[SyntheticStream] = []
    written: dict[tuple[str, int], tuple[float, float]] = {}
    made = time.monotonic()
    for index in range(args.replicas):
        stream = SyntheticStream(Replica(os.path.join(base, f"replica-{index:04d}")), seed=index)
        timestamp = int(time.time() * 1000)
        stream.transaction(timestamp)
        written[(stream.replica.root, stream.txid)] = (timestamp / 1000, time.time())
        stream.images.clear()
        streams.append(stream)
    print(f"made {args.replicas} replicas in {time.monotonic() - made:.1f} s", flush=True)

    config = os.path.join(base, "ltxpool.toml")
    with open(config, "w") as out:
        out.write(f"workers = {args.workers}\nlog_format = \"json\"\nreplicas = {json.dumps([s.replica.root for s in streams])}\n")
    pool = subprocess.Popen([sys.executable, "-m", "ltxpool.cli", "supervise", "--config", config],
                            stderr=subprocess.PIPE, text=True)
    log = Log(pool.stderr)
    try:
        started = time.monotonic()
        while len(log.compactions(9)) < args.replicas:
            if time.monotonic() - started > 600 or pool.poll() is not None:
                print("warm-up did not finish", file=sys.stderr)
                return 1
            time.sleep(0.5)
        time.sleep(3)
        print(f"warm-up: first compactions of every replica in {time.monotonic() - started:.1f} s", flush=True)

        cpu0, wall0 = tree_cpu(pool.pid), time.monotonic()
        time.sleep(args.idle)
        idle_cpu, idle_wall = tree_cpu(pool.pid) - cpu0, time.monotonic() - wall0
        idle_share = idle_cpu / idle_wall
        print(f"idle: {idle_cpu:.2f} CPU s in {idle_wall:.0f} s = {idle_cpu / idle_wall * 60:.2f} CPU s per minute "
              f"= {idle_share * 100:.2f}% of one core (target < 5%)", flush=True)

        cpu0, wall0 = tree_cpu(pool.pid), time.monotonic()
        end = wall0 + args.trickle
        arrivals = 0
        while time.monotonic() < end:
            stream = streams[rng.randrange(len(streams))]
            timestamp = int(time.time() * 1000)
            stream.transaction(timestamp)
            stream.images.clear()
            written[(stream.replica.root, stream.txid)] = (timestamp / 1000, time.time())
            arrivals += 1
            time.sleep(rng.expovariate(args.rate))
        trickle_cpu = tree_cpu(pool.pid) - cpu0
        trickle_wall = time.monotonic() - wall0
        time.sleep(LEVEL1_INTERVAL + 5)

        delays = []
        for record, match in log.compactions(1):
            low = int(match["low"])
            if low < 2:
                continue
            root = match["root"]
            start = float(record["ts"]) - float(match["seconds"])  # type: ignore[arg-type]
            arrival = written[(root, low)][1]
            previous_time = written[(root, low - 1)][0]
            due = max(arrival, previous_time + LEVEL1_INTERVAL)
            delays.append(start - due)
        pending = sum(1 for s in streams if s.replica.list_level(1).files[-1].max_txid < s.txid)
        print(f"trickle: {arrivals} files in {trickle_wall:.0f} s, pool CPU {trickle_cpu / trickle_wall * 100:.1f}% "
              f"of one core; {len(delays)} level-1 compactions measured, {pending} replicas still pending", flush=True)
        if not delays:
            print("no level-1 compaction measured", file=sys.stderr)
            return 1
        p50, p99, worst = percentile(delays, 0.5), percentile(delays, 0.99), max(delays)
        print(f"scheduling delay: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {worst * 1000:.0f} ms, "
              f"mean {statistics.fmean(delays) * 1000:.0f} ms (target p99 < 2000 ms)", flush=True)
        for problem in log.problems()[:10]:
            print(f"log: {problem}", flush=True)
        pool.send_signal(signal.SIGTERM)
        code = pool.wait(60)
        print(f"stopped with exit code {code}", flush=True)
        met = idle_share < 0.05 and p99 < 2.0 and code == 0 and pending == 0
        print("targets met" if met else "TARGETS MISSED", flush=True)
        return 0 if met else 1
    finally:
        if pool.poll() is None:
            pool.kill()
            pool.wait(10)


if __name__ == "__main__":
    sys.exit(main())
