"""What a running replicate costs the app, beside Litestream 0.5.17 in the same run.

Run alone: ``python -m tests.bench.bench_replicate_neighbour [--quick] [--rounds N]``
(from the repository root, with ``litestream`` on PATH). The default run takes about
ten minutes; ``--quick`` about two.

The app is separate processes (fork) doing one-row INSERT transactions
(``synchronous=NORMAL``, busy timeout 5 s) on a copy of a prefilled database
(``--app-mib``); each run gets a fresh copy and, for a replicator, a fresh replica,
and starts its writers only once the replicator has written its first level-0 file.
The replicators: none, ``ltxpool replicate --interval 1`` (see ``ltxpool_command``),
``litestream replicate`` with a file replica (``sync-interval: 1s``). Litestream
supports only WAL mode, so rollback-journal rows have none and ltxpool only. Runs
are interleaved in ``--rounds`` rounds; each figure is printed with the range over
rounds, and every ratio is against the baseline of the same run, because this
machine (2 cores, shared, noisy disk) varies from minute to minute.

1. Commit latency: one writer throttled to ``--lat-rate`` commits/s; p50/p99/max of
   the INSERT (lock wait included), in WAL and rollback-journal mode.
2. Replication lag, from the same runs: every row carries a marker ``mk<seq>``; a
   thread polls ``<replica>/ltx/0`` every 5 ms and decodes each new file
   (``ltxpool.ltx.open_ltx``) for the highest marker it holds (the newest row is on
   the rightmost leaf, which every file after that commit holds). The lag of a commit
   is the time from its COMMIT returning to the first file that covers it. Target:
   ltxpool p99 <= 1.5 s at ``--interval 1``.
3. TRUNCATE checkpoints: one unthrottled writer, and another process running
   ``PRAGMA wal_checkpoint(TRUNCATE)`` every 0.5 s. Commits of the writer (per
   second and in the run), its longest commit, how long the checkpoints took and how
   many returned busy. Target: >= 50 % of the commits with no replicator running
   (the checkpointer runs in the baseline too).
4. WAL high-water mark: one writer throttled to ``--hwm-rate`` (800) commits/s; the
   size of ``-wal`` sampled every 5 ms. Target: ltxpool <= Litestream.
5. Full compare: a step of a fresh ``Replicator(db, replica)`` (fresh process) after
   a one-row change, which must compare every page (the first capture of a process
   proves nothing); against a plain sequential read of the file (1 MiB reads), both
   from a warm page cache, alternately, ``--compare-runs`` each.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import json
import multiprocessing
import os
import random
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from ltxpool.ltx import open_ltx
from ltxpool.replicate import Replicator

# Where the benchmark's own child processes start (``-m tests.bench...`` needs it).
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

BUSY_TIMEOUT = 5.0
INTERVAL = 1.0
PAGE_SIZE = 4096
MARKER = re.compile(rb"mk(\d{10})")
LTX_NAME = re.compile(r"^[0-9a-f]{16}-[0-9a-f]{16}\.ltx$")  # Litestream's and ltxpool's level-0 names
FORK = multiprocessing.get_context("fork")


def build(path: str, mib: int) -> int:
    """A WAL database of about ``mib`` MiB (as tests/bench/bench_replicate.py builds it);
    returns its page count."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
    conn.execute("PRAGMA journal_mode=off")
    conn.execute("PRAGMA synchronous=off")
    conn.execute("CREATE TABLE events(id INTEGER PRIMARY KEY, body TEXT, n INTEGER, payload BLOB)")
    conn.execute(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?) "
        "INSERT INTO events(body, n, payload) SELECT printf('user%d signed in from %s status %d note %s', "
        "x, hex(randomblob(6)), x % 7, substr('alpha beta gamma delta select insert update where order', 1 + x % 20, 30)), "
        "x * 37, randomblob(200 + x % 150) FROM c",
        (mib * 1024 * 1024 // 395,),
    )
    conn.execute("PRAGMA journal_mode=wal")
    pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
    conn.close()
    return pages


def ltxpool_command(db: str, replica: str, interval: float = INTERVAL) -> tuple[list[str], dict[str, str]]:
    """argv and environment of a continuous ``ltxpool replicate`` (the installed package)."""
    return [sys.executable, "-m", "ltxpool.cli", "replicate", db, replica, "--interval", f"{interval:g}"], dict(os.environ)


def litestream_command(db: str, replica: str, config: str) -> tuple[list[str], dict[str, str]]:
    with open(config, "w") as out:
        out.write(
            "dbs:\n"
            f"  - path: {db}\n"
            "    replicas:\n"
            "      - type: file\n"
            f"        path: {replica}\n"
            "        sync-interval: 1s\n"
        )
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    return ["litestream", "replicate", "-config", config], env


# -- the app: writer and checkpointer processes ------------------------------------------


def connect(db: str) -> sqlite3.Connection:
    conn = sqlite3.connect(db, isolation_level=None, timeout=BUSY_TIMEOUT)
    conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT * 1000)}")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def writer(db: str, duration: float, rate: float | None, go, out, keep: bool) -> None:
    """One-row INSERTs for ``duration`` seconds (at ``rate`` a second if given); puts
    the commits (monotonic time and latency of each if ``keep``) on ``out``."""
    conn = connect(db)
    body = "x" * 80
    latencies: list[float] = []
    committed_at: list[float] = []
    errors = 0
    commits = 0
    longest = 0.0
    go.wait()
    start = time.monotonic()
    next_at = start
    seq = 1
    while True:
        now = time.monotonic()
        if now - start >= duration:
            break
        if rate:
            if next_at > now:
                time.sleep(next_at - now)
            next_at = max(next_at + 1 / rate, time.monotonic() - 0.05)  # catch up at most 50 ms
        t0 = time.perf_counter()
        try:
            conn.execute("INSERT INTO app(seq, body) VALUES (?, ?)", (seq, f"mk{seq:010d} {body}"))
        except sqlite3.OperationalError:  # "database is locked" after the busy timeout
            errors += 1
            longest = max(longest, time.perf_counter() - t0)
            continue
        latency = time.perf_counter() - t0
        longest = max(longest, latency)
        commits += 1
        if keep:
            latencies.append(latency)
            committed_at.append(time.monotonic())
        seq += 1
    elapsed = time.monotonic() - start
    conn.close()
    out.put({"kind": "writer", "commits": commits, "errors": errors, "seconds": elapsed, "longest": longest,
             "latencies": latencies, "committed_at": committed_at})


def checkpointer(db: str, duration: float, period: float, go, out) -> None:
    """``PRAGMA wal_checkpoint(TRUNCATE)`` every ``period`` seconds; puts the durations."""
    conn = connect(db)
    durations: list[float] = []
    busy = errors = 0
    go.wait()
    start = time.monotonic()
    tick = start
    while True:
        tick = max(tick + period, time.monotonic())  # a checkpoint that overran: the next one now
        if tick - start >= duration:
            break
        delay = tick - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        t0 = time.perf_counter()
        try:
            row = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            busy += bool(row[0])
        except sqlite3.OperationalError:
            errors += 1
        durations.append(time.perf_counter() - t0)
    conn.close()
    out.put({"kind": "checkpointer", "durations": durations, "busy": busy, "errors": errors})


# -- the replicators ------------------------------------------------------------------


def _level0(replica: str) -> str:
    return os.path.join(replica, "ltx", "0")


def _ltx_names(directory: str) -> list[str]:
    try:
        return [n for n in os.listdir(directory) if LTX_NAME.match(n)]
    except FileNotFoundError:
        return []


@contextlib.contextmanager
def replicator(kind: str, db: str, workdir: str) -> Iterator[str | None]:
    """Run ``kind`` (none | ltxpool | litestream) on ``db``; yield its level-0 directory
    once its first file is there. Stopped (SIGTERM, then SIGKILL) on the way out."""
    if kind == "none":
        yield None
        return
    replica = os.path.join(workdir, f"replica-{kind}")
    if kind == "ltxpool":
        argv, env = ltxpool_command(db, replica)
    else:
        argv, env = litestream_command(db, replica, os.path.join(workdir, "litestream.yml"))
    log_path = os.path.join(workdir, f"{kind}.log")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not _ltx_names(_level0(replica)):
            if proc.poll() is not None or time.monotonic() > deadline:
                with open(log_path, errors="replace") as log:
                    tail = log.read()[-2000:]
                raise RuntimeError(f"{kind} did not write its first file (exit {proc.poll()}):\n{tail}")
            time.sleep(0.05)
        time.sleep(0.5)
        yield _level0(replica)
        if proc.poll() is not None:
            raise RuntimeError(f"{kind} exited {proc.returncode} during the run; see {log_path}")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class Watcher(threading.Thread):
    """Every 5 ms: the size of ``-wal`` (high-water mark) and, with a level-0 directory,
    each new file's arrival time and highest marker."""

    def __init__(self, db: str, level0: str | None) -> None:
        super().__init__(daemon=True)
        self.wal = db + "-wal"
        self.level0 = level0
        self.stop = threading.Event()
        self.hwm = 0
        self.samples = 0
        self.files: list[tuple[float, int]] = []  # (arrival, highest marker), in arrival order
        self.undecodable = 0
        self.seen = set(_ltx_names(level0)) if level0 else set()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.hwm = max(self.hwm, os.stat(self.wal).st_size)
            except FileNotFoundError:
                pass
            self.samples += 1
            if self.level0:
                new = sorted(set(_ltx_names(self.level0)) - self.seen)
                arrival = time.monotonic()
                for name in new:
                    self.seen.add(name)
                    self.files.append((arrival, self._highest_marker(os.path.join(self.level0, name))))
            self.stop.wait(0.005)

    def _highest_marker(self, path: str) -> int:
        try:
            with open_ltx(path) as decoder:
                return max((int(m) for _, page in decoder.pages() for m in MARKER.findall(page)), default=0)
        except Exception:
            self.undecodable += 1
            return 0

    def lags(self, committed_at: list[float]) -> tuple[list[float], int]:
        """Commit-to-file lag of each commit (seq = index + 1); and how many no file covered."""
        highest: list[int] = []
        for _, marker in self.files:
            highest.append(max(marker, highest[-1] if highest else 0))
        lags = []
        for index, at in enumerate(committed_at):
            i = bisect.bisect_left(highest, index + 1)
            if i < len(highest):
                lags.append(self.files[i][0] - at)
        return lags, len(committed_at) - len(lags)


@dataclass
class Run:
    writers: list[dict] = field(default_factory=list)
    checkpoints: dict | None = None
    hwm: int = 0
    lags: list[float] = field(default_factory=list)
    uncovered: int = 0
    files: int = 0
    undecodable: int = 0
    samples: int = 0


def collect(out, procs: list, timeout: float, what: str) -> list[dict]:
    """One result from each of ``procs``; fail fast (with who is stuck) if one dies or hangs."""
    import queue

    results: list[dict] = []
    deadline = time.monotonic() + timeout
    while len(results) < len(procs):
        try:
            results.append(out.get(timeout=0.5))
        except queue.Empty:
            dead = [p.exitcode for p in procs if not p.is_alive() and p.exitcode != 0]
            if dead or time.monotonic() > deadline:
                state = ", ".join(f"{p.name} alive={p.is_alive()} exit={p.exitcode}" for p in procs)
                raise RuntimeError(f"{what}: {len(results)} of {len(procs)} results ({state})") from None
    return results


def app_run(template: str, tmp: str, kind: str, journal: str, duration: float, rate: float | None,
            checkpoint_every: float | None = None, keep: bool = False, tail: float = 3.0) -> Run:
    """A fresh copy of ``template`` in ``journal`` mode, replicated by ``kind``, with one
    writer (and a checkpointer); the run's results."""
    workdir = tempfile.mkdtemp(dir=tmp, prefix=f"{kind}-{journal}-")
    try:
        db = os.path.join(workdir, "app.db")
        shutil.copyfile(template, db)
        conn = sqlite3.connect(db, isolation_level=None)
        mode = conn.execute(f"PRAGMA journal_mode={journal}").fetchone()[0]
        assert mode == journal, (mode, journal)
        conn.close()
        with replicator(kind, db, workdir) as level0:
            go = FORK.Event()
            out = FORK.Queue()
            procs = [FORK.Process(target=writer, args=(db, duration, rate, go, out, keep))]
            if checkpoint_every:
                procs.append(FORK.Process(target=checkpointer, args=(db, duration, checkpoint_every, go, out)))
            watcher = None
            try:
                for proc in procs:
                    proc.start()
                watcher = Watcher(db, level0)
                watcher.start()
                go.set()
                results = collect(out, procs, duration + 60, f"{kind} {journal}")
                run = Run(writers=[r for r in results if r["kind"] == "writer"],
                          checkpoints=next((r for r in results if r["kind"] == "checkpointer"), None))
                if level0 and keep:
                    last = max(w["committed_at"][-1] for w in run.writers if w["committed_at"])
                    while time.monotonic() < last + tail and not (
                        watcher.files and max(m for _, m in watcher.files) >= len(run.writers[0]["committed_at"])
                    ):
                        time.sleep(0.05)
            finally:
                if watcher is not None:
                    watcher.stop.set()
                    watcher.join()
                for proc in procs:
                    proc.join(10)
                    if proc.is_alive():
                        proc.terminate()
                        proc.join()
        run.hwm = watcher.hwm
        run.samples = watcher.samples
        run.files = len(watcher.files)
        run.undecodable = watcher.undecodable
        if level0 and keep:
            run.lags, run.uncovered = watcher.lags(run.writers[0]["committed_at"])
        return run
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# -- formatting -----------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def rng(values: list[float], fmt: str = ".2f") -> str:
    """median (min-max) over rounds."""
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def say(text: str = "") -> None:
    print(text, flush=True)


# -- the sections ---------------------------------------------------------------------


def section_latency(template: str, tmp: str, args) -> None:
    conds = [("wal", "none"), ("wal", "ltxpool"), ("wal", "litestream"), ("delete", "none"), ("delete", "ltxpool")]
    runs: dict[tuple[str, str], list[Run]] = {c: [] for c in conds}
    for _ in range(args.rounds):
        for journal, kind in conds:
            runs[journal, kind].append(app_run(template, tmp, kind, journal, args.lat_seconds, args.lat_rate, keep=True))
    say(f"\n(1) commit latency, one writer at {args.lat_rate:g} commits/s for {args.lat_seconds:g} s, "
        f"{args.rounds} round(s); ms, median (range) over rounds:")
    for journal, kind in conds:
        rs = runs[journal, kind]
        lat = [[x * 1000 for x in r.writers[0]["latencies"]] for r in rs]
        rate = [r.writers[0]["commits"] / r.writers[0]["seconds"] for r in rs]
        base = [[x * 1000 for x in r.writers[0]["latencies"]] for r in runs[journal, "none"]]
        p99_ratio = [pct(a, 0.99) / pct(b, 0.99) for a, b in zip(lat, base)]
        say(f"  {journal:6} {kind:10}: p50 {rng([pct(x, .5) for x in lat], '.3f')}  p99 {rng([pct(x, .99) for x in lat], '.2f')}  "
            f"max {rng([max(x) for x in lat], '.1f')}  (p99 / none {rng(p99_ratio)}; {rng(rate, '.0f')} commits/s, "
            f"errors {sum(r.writers[0]['errors'] for r in rs)})")
    say(f"\n(2) replication lag, commit -> first level-0 file holding it, same runs, --interval {INTERVAL:g}; s:")
    for journal, kind in conds:
        if kind == "none":
            continue
        rs = runs[journal, kind]
        lags = [r.lags for r in rs]
        ok = [pct(x, .99) <= 1.5 for x in lags]
        say(f"  {journal:6} {kind:10}: p50 {rng([pct(x, .5) for x in lags], '.3f')}  p99 {rng([pct(x, .99) for x in lags], '.3f')}  "
            f"max {rng([max(x) if x else float('nan') for x in lags], '.3f')}  files {rng([r.files for r in rs], '.0f')}, "
            f"not covered by the end {sum(r.uncovered for r in rs)}, undecodable {sum(r.undecodable for r in rs)}"
            f"{'' if kind == 'litestream' else '  (target p99 <= 1.5 s: ' + ('met' if all(ok) else 'MISSED') + ')'}")


def section_truncate(template: str, tmp: str, args) -> None:
    conds = ["none", "ltxpool", "litestream"]
    runs: dict[str, list[Run]] = {c: [] for c in conds}
    for _ in range(args.rounds):
        for kind in conds:
            runs[kind].append(app_run(template, tmp, kind, "wal", args.trunc_seconds, None, checkpoint_every=0.5))
    say(f"\n(3) one unthrottled writer + wal_checkpoint(TRUNCATE) every 0.5 s, {args.trunc_seconds:g} s, "
        f"{args.rounds} round(s), WAL:")
    for kind in conds:
        rs = runs[kind]
        commits = [r.writers[0]["commits"] for r in rs]
        ratio = [r.writers[0]["commits"] / b.writers[0]["commits"] for r, b in zip(rs, runs["none"])]
        cp = [d * 1000 for r in rs for d in r.checkpoints["durations"]]
        target = "" if kind == "none" else f"  vs none {rng([x * 100 for x in ratio], '.0f')} % " \
            f"(target >= 50 %: {'met' if min(ratio) >= 0.5 else 'MISSED'})"
        say(f"  {kind:10}: commits {rng(commits, '.0f')} ({rng([r.writers[0]['commits'] / r.writers[0]['seconds'] for r in rs], '.0f')}/s)"
            f"{target}")
        say(f"  {'':10}  longest INSERT (failed ones too) {rng([r.writers[0]['longest'] * 1000 for r in rs], '.0f')} ms, "
            f"'database is locked' {sum(r.writers[0]['errors'] for r in rs)}; checkpoints: {len(cp)}, "
            f"p50 {pct(cp, .5):.1f} ms, p99 {pct(cp, .99):.0f} ms, max {max(cp):.0f} ms, "
            f"busy {sum(r.checkpoints['busy'] for r in rs)}, errors {sum(r.checkpoints['errors'] for r in rs)}")


def section_hwm(template: str, tmp: str, args) -> None:
    conds = ["none", "ltxpool", "litestream"]
    runs: dict[str, list[Run]] = {c: [] for c in conds}
    for _ in range(args.rounds):
        for kind in conds:
            runs[kind].append(app_run(template, tmp, kind, "wal", args.hwm_seconds, args.hwm_rate))
    say(f"\n(4) WAL high-water mark, one writer at {args.hwm_rate:g} commits/s for {args.hwm_seconds:g} s, "
        f"{args.rounds} round(s), -wal sampled every 5 ms; MiB:")
    for kind in conds:
        rs = runs[kind]
        hwm = [r.hwm / 2**20 for r in rs]
        rate = [r.writers[0]["commits"] / r.writers[0]["seconds"] for r in rs]
        extra = "" if kind == "none" else f"  / none {rng([r.hwm / max(1, b.hwm) for r, b in zip(rs, runs['none'])])}"
        if kind == "ltxpool":
            ratio = [r.hwm / max(1, b.hwm) for r, b in zip(rs, runs["litestream"])]
            extra += f", ltxpool / litestream {rng(ratio)} (target <= 1: {'met' if max(ratio) <= 1 else f'MISSED by up to {(max(ratio) - 1) * 100:.0f} %'})"
        say(f"  {kind:10}: {rng(hwm, '.1f')} MiB  ({rng(rate, '.0f')} commits/s, {rng([r.samples for r in rs], '.0f')} samples){extra}")


# -- (5) full compare, in fresh processes ------------------------------------------------


def child_read(db: str) -> dict:
    start = time.perf_counter()
    with open(db, "rb", buffering=0) as src:
        buf = bytearray(1 << 20)
        while src.readinto(buf):
            pass
    return {"seconds": time.perf_counter() - start}


def child_step(db: str, replica: str) -> dict:
    start = time.perf_counter()
    with Replicator(db, replica) as replicator:
        opened = time.perf_counter()
        result = replicator.step()
        done = time.perf_counter()
    assert result is not None
    return {"open": opened - start, "seconds": done - opened, "full_scan": result.full_scan,
            "snapshot": result.snapshot, "pages": result.pages}


def run_child(*args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "tests.bench.bench_replicate_neighbour", "--child", *args], cwd=ROOT,
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def section_compare(tmp: str, args) -> None:
    say(f"\n(5) full compare step (fresh process, one-row change), vs a sequential read; "
        f"warm cache, {args.compare_runs} runs each, alternately:")
    for mib in args.compare_mib:
        db = os.path.join(tmp, f"big-{mib}.db")
        replica = os.path.join(tmp, f"big-{mib}-replica")
        try:
            started = time.perf_counter()
            pages = build(db, mib)
            size = os.path.getsize(db)
            first = run_child("step", db, replica)
            assert first["snapshot"]
            say(f"  {mib} MiB: built {pages} pages in {time.perf_counter() - started:.1f} s, first snapshot "
                f"{first['seconds']:.1f} s")
            conn = sqlite3.connect(db, isolation_level=None)
            rows = int(conn.execute("SELECT max(id) FROM events").fetchone()[0])
            conn.close()
            rand = random.Random(mib)
            reads, steps = [], []
            for _ in range(args.compare_runs):
                reads.append(run_child("read", db))
                conn = sqlite3.connect(db, isolation_level=None)
                conn.execute("UPDATE events SET n = n + 1 WHERE id = ?", (rand.randint(1, rows),))
                conn.close()
                step = run_child("step", db, replica)
                assert step["full_scan"] and not step["snapshot"], step
                steps.append(step)
            read_s = [r["seconds"] for r in reads]
            step_s = [s["seconds"] for s in steps]
            ratio = [min(read_s) / s for s in step_s]
            say(f"    sequential read: {rng(read_s, '.3f')} s, {rng([size / 1e6 / s for s in read_s], '.0f')} MB/s")
            say(f"    compare step:    {rng(step_s, '.3f')} s, {rng([size / 1e6 / s for s in step_s], '.0f')} MB/s "
                f"({rng([x * 100 for x in ratio], '.0f')} % of the best read's throughput); "
                f"Replicator() open {rng([s['open'] for s in steps], '.3f')} s; pages written "
                f"{min(s['pages'] for s in steps)}-{max(s['pages'] for s in steps)}")
        finally:
            shutil.rmtree(replica, ignore_errors=True)
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(db + suffix)


def make_template(tmp: str, mib: int) -> str:
    path = os.path.join(tmp, "template.db")
    build(path, mib)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE app(id INTEGER PRIMARY KEY, seq INTEGER, body TEXT)")
    conn.close()  # last close: checkpointed, -wal removed; the file alone is the database
    assert not os.path.exists(path + "-wal")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short durations, one round, 64 + 256 MiB compares")
    parser.add_argument("--rounds", type=int, default=None, help="rounds of the app runs (default 2, quick 1)")
    parser.add_argument("--app-mib", type=int, default=None, help="prefilled app database (default 64, quick 16)")
    parser.add_argument("--lat-rate", type=float, default=200.0)
    parser.add_argument("--hwm-rate", type=float, default=800.0)
    parser.add_argument("--sections", default="latency,truncate,hwm,compare")
    parser.add_argument("--dir", default=None, help="scratch directory (default: a temp dir under /tmp)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        print(json.dumps(child_read(*rest) if kind == "read" else child_step(*rest)))
        return
    quick = args.quick
    args.rounds = args.rounds or (1 if quick else 2)
    args.app_mib = args.app_mib or (16 if quick else 64)
    args.lat_seconds = 5.0 if quick else 12.0
    args.trunc_seconds = 6.0 if quick else 20.0
    args.hwm_seconds = 5.0 if quick else 12.0
    args.compare_mib = [64, 256] if quick else [256, 1024]
    args.compare_runs = 2 if quick else 3
    sections = set(args.sections.split(","))

    version = subprocess.run(["litestream", "version"], capture_output=True, text=True, check=True).stdout.strip()
    say(f"litestream {version}; python {sys.version.split()[0]}, sqlite {sqlite3.sqlite_version}; "
        f"{os.cpu_count()} cpus{'; --quick' if quick else ''}")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench-neighbour-") as tmp:
        template = make_template(tmp, args.app_mib)
        say(f"app database: {os.path.getsize(template) / 2**20:.0f} MiB prefilled, one-row INSERTs of ~95 bytes, "
            f"synchronous=NORMAL, busy timeout {BUSY_TIMEOUT:g} s")
        if "latency" in sections:
            section_latency(template, tmp, args)
        if "truncate" in sections:
            section_truncate(template, tmp, args)
        if "hwm" in sections:
            section_hwm(template, tmp, args)
        if "compare" in sections:
            section_compare(tmp, args)
    say(f"\ntotal {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
