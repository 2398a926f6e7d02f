"""What a replica looks like now, per level: for ``ltxpool status`` and the metrics server.

Read-only and lock-free: a status never waits for a writer and never changes a file.
Per level: files, bytes, TXID range, gaps and overlaps between consecutive files
(``level_problems``), temp files and how many of them are orphans, and the time of
the newest file. Per replica: quarantined files, and TXID ranges that no level holds
any more (``coverage_gaps``: lost, unlike a hole at a low level that a higher level
covers, which is retention doing its job), and what the ladder costs since the latest
snapshot (``ltxpool.replica.ladder_cost``: compaction bytes, write amplification).

*Orphan* temp file, as far as a reader without the lock can tell: an ltxpool temp
file whose writer (the pid in its name) no longer exists, or another tool's ``*.tmp``
older than ``foreign_temp_age``. The janitor removes both on its next round.

*Newest file time*: the ctime of the level's highest-TXID file, i.e. when it was
renamed into place. For level 0 that is the last arrival, for levels 1-3 and 9 the
last compaction into the level. (Not the mtime: the compactor sets an output's
mtime to its header timestamp, as Litestream does.)
"""

from __future__ import annotations

import errno
import json
import os
import stat
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ltxpool.display import escape, one_line
from ltxpool.errors import LtxpoolError
from ltxpool.locks.claim import CLAIM_NAME
from ltxpool.locks.dirlock import DEFAULT_SLOTS, GATE_NAME, SLOT_PREFIX
from ltxpool.locks.holders import Holder, LockTable
from ltxpool.replica.atomic import is_ltxpool_temp, temp_file_writer
from ltxpool.replica.chain_check import check_txid, trusted_newest
from ltxpool.replica.directory import Directory
from ltxpool.replica.errors import DirectoryError, LevelDirectoryError
from ltxpool.replica.janitor import DEFAULT_FOREIGN_TEMP_AGE
from ltxpool.replica.ladder_cost import LadderCost, ladder_cost
from ltxpool.replica.layout import LEVELS, PROBLEM_NAME, Listing, LtxFile, Replica
from ltxpool.replica.plan import coverage_gaps, latest_snapshot, level_problems
from ltxpool.replica.quarantine import quarantined_files

# A problem note is a line or two; never read more of a file a tenant may have planted.
_PROBLEM_LIMIT = 4096

__all__ = [
    "LevelStatus",
    "RecordedProblem",
    "ReplicaStatus",
    "replica_status",
    "guarded_status",
    "status_document",
    "format_table",
    "human_age",
    "status_metrics",
    "StatusCollector",
]


@dataclass
class LevelStatus:
    level: int
    files: int = 0
    bytes: int = 0
    min_txid: int | None = None
    max_txid: int | None = None
    gaps: int = 0
    overlaps: int = 0
    temp_files: int = 0
    orphan_temp_files: int = 0
    newest_file_time: float | None = None
    #: Processes other than ltxpool's holding one of the level's lock files right now.
    foreign_lock_holders: int = 0
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RecordedProblem:
    """What a continuous replicate recorded in ``problem.json``: why it cannot step, since when, its pid.

    ``since`` and ``pid`` are None when the file was there but could not be read (the
    reason then says so).
    """

    reason: str
    since: float | None = None
    pid: int | None = None

    def note(self, now: float) -> str:
        if self.since is None or self.pid is None:
            return f"replicate: {self.reason}"
        return f"replicate (pid {self.pid}) cannot step for {human_age(max(now - self.since, 0.0))}: {self.reason}"


@dataclass
class ReplicaStatus:
    root: str
    levels: list[LevelStatus]
    quarantined: int = 0
    lost_ranges: list[tuple[int, int]] = field(default_factory=list)
    # Why the latest TXID would not restore (``ltxpool.replica.chain_check``); empty: it restores.
    restore_problems: list[str] = field(default_factory=list)
    # What keeps a continuous replicate from stepping, as it recorded it; None: nothing.
    replicate_problem: str | None = None
    recorded_problem: RecordedProblem | None = None
    # Why the replica could not be read at all (one line, names escaped); None: it was read.
    unreadable: str | None = None
    # Bytes compaction wrote since the latest snapshot, per byte at level 0; None: unreadable or not deep.
    ladder: LadderCost | None = None
    # False: a quick status, without the restore chain check and the ladder cost (which read
    # LTX headers and page indexes): restore_problems is then empty because nothing was checked.
    deep: bool = True


def _writer_gone(name: str) -> bool:
    pid = temp_file_writer(name)
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        # No such process -- and a pid no process can have (a planted name) is none either.
        return True
    except PermissionError:
        return False
    return False


def _count_temp_files(directory: Directory | None, now: float, foreign_temp_age: float) -> tuple[int, int]:
    """Temp files in the level directory as listed (its descriptor, never its path again)."""
    temps = orphans = 0
    if directory is None:
        return 0, 0
    try:
        entries = directory.scandir()
    except DirectoryError as exc:
        raise LevelDirectoryError(exc.path, "list level directory", exc.errno, exc.reason) from exc
    for entry in entries:
        if not entry.name.endswith(".tmp"):
            continue
        temps += 1
        if is_ltxpool_temp(entry.name):
            orphans += _writer_gone(entry.name)
            continue
        try:
            orphans += now - entry.stat(follow_symlinks=False).st_mtime > foreign_temp_age
        except FileNotFoundError:
            temps -= 1
    return temps, orphans


_LOCK_NAMES = (GATE_NAME, CLAIM_NAME, *(f"{SLOT_PREFIX}{i:02d}" for i in range(DEFAULT_SLOTS)))
_LOCK_NAME_SET = frozenset(_LOCK_NAMES)


def _is_ltxpool(pid: int) -> bool:
    """Whether process ``pid`` runs ltxpool: the ``ltxpool`` script, or ``python -m ltxpool...``.

    Judged by the program and its first arguments only (a holder's other arguments,
    such as a lock file's path, may name ltxpool too). Unknown counts as not.
    """
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            args = cmdline.read(4096).split(b"\0")
    except OSError:
        return False
    if os.path.basename(args[0]) == b"ltxpool" or (len(args) > 1 and os.path.basename(args[1]) == b"ltxpool"):
        return True
    return len(args) > 2 and args[1] == b"-m" and args[2].split(b".")[0] == b"ltxpool"


def _foreign_lock_holders(listings: Mapping[int, Listing],
                          locks: LockTable | None) -> dict[int, list[tuple[str, Holder]]]:
    """Per level, (lock file, holder) for each lock held by a process that is not ltxpool.

    Read from one ``/proc/locks`` read by the inodes of every level's lock files, which
    are only listed (and ``lstat``-ed when their inode is locked): asking takes no lock. A worker of the pool holds these for
    microseconds to a compaction's length and is not reported; anyone else holding one
    stalls the replica (``lock_timeout``) and is named here, in the log and as a metric.
    ``locks``: a table already read, shared by the statuses of many replicas.
    """
    table = locks or LockTable.read()
    inodes: dict[tuple[int, int], tuple[int, str]] = {}
    for level, listing in listings.items():
        if listing.directory is None:
            continue
        try:
            entries = listing.directory.scandir()
        except DirectoryError:
            continue
        # One listing per level, not an lstat per possible lock name: thousands of replicas.
        for entry in entries:
            if entry.name not in _LOCK_NAME_SET or not table.locked(entry.inode()):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            inodes[(st.st_dev, st.st_ino)] = (level, listing.directory.display(entry.name))
    found: dict[int, list[tuple[str, Holder]]] = {level: [] for level in listings}
    for key, holders in table.holders(inodes).items():
        level, path = inodes[key]
        found[level].extend((path, holder) for holder in holders if not _is_ltxpool(holder.pid))
    return found


def _level_status(replica: Replica, listing: Listing, snapshot: LtxFile | None,
                  foreign: list[tuple[str, Holder]], now: float,
                  foreign_temp_age: float) -> LevelStatus:
    files = listing.files
    status = LevelStatus(listing.level, files=len(files), bytes=sum(f.size for f in files))
    # The level's TXID is the newest file's whose header confirms its name; the others are problems.
    newest, misnamed = trusted_newest(listing)
    status.problems.extend(str(problem) for problem in misnamed)
    if newest is not None:
        status.min_txid = min(f.min_txid for f in files)
        status.max_txid = newest.max_txid
        try:
            status.newest_file_time = (os.lstat(newest.path) if newest.directory is None
                                       else newest.directory.lstat(newest.name)).st_ctime
        except FileNotFoundError:
            status.newest_file_time = None
    for problem in level_problems(listing, snapshot):
        status.gaps += problem.startswith("gap")
        status.overlaps += problem.startswith("overlap")
        status.problems.append(problem)
    status.problems.extend(f"{escape(path)}: {reason}" for path, reason in listing.skipped)
    status.temp_files, status.orphan_temp_files = _count_temp_files(listing.directory, now, foreign_temp_age)
    status.foreign_lock_holders = len(foreign)
    status.problems.extend(f"{escape(path)}: held by {holder}, not an ltxpool process" for path, holder in foreign)
    return status


def replica_status(replica: Replica, now: float, foreign_temp_age: float = DEFAULT_FOREIGN_TEMP_AGE, *,
                   deep: bool = True, locks: LockTable | None = None) -> ReplicaStatus:
    """The status of one replica; a root that is not a directory is an error naming it.

    ``deep=False`` leaves out what reads LTX headers and page indexes along the restore
    chain (``restore_problems``, ``ladder``): a summary of thousands needs only listings.
    ``locks``: one read of ``/proc/locks`` for many replicas (default: read it now).
    """
    try:
        if not stat.S_ISDIR(os.stat(replica.root).st_mode):
            raise LevelDirectoryError(replica.root, "status", errno.ENOTDIR, "not a directory")
    except OSError as exc:
        raise LevelDirectoryError.from_oserror(replica.root, "status", exc) from exc
    listings = replica.list_all()
    latest = check_txid(listings) if deep and any(listing.files for listing in listings.values()) else None
    snapshot = latest_snapshot(listings)
    foreign = _foreign_lock_holders(listings, locks)
    problem = _recorded_problem(replica)
    return ReplicaStatus(
        root=replica.root,
        levels=[_level_status(replica, listings[level], snapshot, foreign[level], now, foreign_temp_age)
                for level in LEVELS],
        quarantined=len(quarantined_files(replica)),
        lost_ranges=coverage_gaps(listings),
        restore_problems=[] if latest is None else [f"{escape(latest.path)}: {latest.summary}"],
        replicate_problem=None if problem is None else problem.note(now),
        recorded_problem=problem,
        ladder=ladder_cost(listings) if deep else None,
        deep=deep,
    )


def guarded_status(root: str, now: float, foreign_temp_age: float = DEFAULT_FOREIGN_TEMP_AGE, *,
                   deep: bool = True, locks: LockTable | None = None) -> ReplicaStatus:
    """The status of one replica, or one saying why it is unreadable, whatever was raised.

    A tenant controls every name, link and byte in their replica, so whatever those
    make the status code raise -- an error we foresaw or a bug we did not -- is that
    replica's problem: ``status`` and every scrape must still report all the others.
    """
    try:
        return replica_status(Replica(root), now, foreign_temp_age, deep=deep, locks=locks)
    except Exception as exc:  # anything, on purpose: see the docstring
        return ReplicaStatus(root=root, levels=[], unreadable=_cause(exc), deep=deep)


def _cause(exc: Exception) -> str:
    """One line: our errors escape their names already; any other is named by its type."""
    if isinstance(exc, LtxpoolError):
        return one_line(str(exc))
    text = str(exc)
    return escape(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


def _recorded_problem(replica: Replica) -> RecordedProblem | None:
    """The problem a continuous replicate recorded (never followed through a link)."""
    path = os.path.join(replica.state_dir, PROBLEM_NAME)
    try:
        fd = replica.open_state_file(PROBLEM_NAME)
    except (OSError, DirectoryError):
        return None
    if fd is None:
        return None
    try:
        document = json.loads(os.read(fd, _PROBLEM_LIMIT))
        reason, since, pid = str(document["reason"]), float(document["since"]), int(document["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return RecordedProblem(f"unreadable {escape(path)}")
    finally:
        os.close(fd)
    return RecordedProblem(one_line(reason), since, pid)


def _age(newest: float | None, now: float) -> float | None:
    return None if newest is None else max(now - newest, 0.0)


def status_document(statuses: Sequence[ReplicaStatus], now: float) -> dict[str, Any]:
    """The ``--json`` form: plain numbers, TXIDs in decimal, ages in seconds."""
    replicas = []
    for status in statuses:
        levels = []
        for level in status.levels:
            entry = asdict(level)
            entry["newest_file_age_seconds"] = _age(level.newest_file_time, now)
            levels.append(entry)
        replicas.append({
            "root": status.root,
            "quarantined": status.quarantined,
            "lost_ranges": [list(r) for r in status.lost_ranges],
            "restore_problems": status.restore_problems,
            "restore_checked": status.deep,
            "replicate_problem": status.replicate_problem,
            "unreadable": status.unreadable,
            "ladder": None if status.ladder is None else {
                **asdict(status.ladder), "write_amplification": status.ladder.write_amplification,
            },
            "levels": levels,
        })
    return {"time": now, "replicas": replicas}


def human_age(seconds: float | None) -> str:
    """``42.0s``, ``1.7m``, ``3.0h``, ``2.0d``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.1f}s"


_COLUMNS = ("REPLICA", "LEVEL", "FILES", "BYTES", "MIN_TXID", "MAX_TXID", "GAPS", "OVERLAPS", "TEMP",
            "ORPHAN_TEMP", "NEWEST_AGE")


def format_table(statuses: Sequence[ReplicaStatus], now: float) -> str:
    """One row per replica and level that has anything; then quarantine, lost ranges, problems."""
    rows = [_COLUMNS]
    notes: list[str] = []
    for status in statuses:
        root = escape(status.root)
        if status.unreadable is not None:
            notes.append(f"{root}: unreadable: {status.unreadable}")
            continue
        for level in status.levels:
            if not (level.files or level.temp_files or level.problems):
                continue
            rows.append((
                root, str(level.level), str(level.files), str(level.bytes),
                "-" if level.min_txid is None else str(level.min_txid),
                "-" if level.max_txid is None else str(level.max_txid),
                str(level.gaps), str(level.overlaps), str(level.temp_files), str(level.orphan_temp_files),
                human_age(_age(level.newest_file_time, now)),
            ))
            notes.extend(f"{root}: {problem}" for problem in level.problems)
        if status.quarantined:
            notes.append(f"{root}: {status.quarantined} quarantined files in {escape(Replica(status.root).quarantine_dir)}")
        notes.extend(f"{root}: TXIDs {low}-{high} are in no file at any level" for low, high in status.lost_ranges)
        notes.extend(status.restore_problems)
        if status.replicate_problem is not None:
            notes.append(f"{root}: {status.replicate_problem}")
        if status.ladder is not None and status.ladder.window_start is not None:
            notes.append(f"{root}: {_ladder_note(status.ladder)}")
        if not any(level.files for level in status.levels):
            notes.append(f"{root}: no LTX files")
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    lines = ["  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row))
             for row in rows]
    # Notes quote problem texts built elsewhere: one_line keeps each one a line, whatever they hold.
    return "\n".join([*lines, *(one_line(note) for note in notes)])


def _ladder_note(cost: LadderCost) -> str:
    amplification = "-" if cost.write_amplification is None else f"{cost.write_amplification:.2f}"
    since = "no snapshot" if cost.snapshot_txid is None else f"the snapshot at TXID {cost.snapshot_txid}"
    return (f"since {since} (TXIDs {cost.window_start}-): level 0 {cost.level0_bytes} bytes, "
            f"compaction {cost.compaction_bytes} bytes, write amplification {amplification}")


def status_metrics(statuses: Sequence[ReplicaStatus]) -> Iterator[GaugeMetricFamily]:
    """The status as Prometheus gauges (labels: replica, level); an unreadable replica has only readable 0."""
    per_level = {
        "files": ("ltxpool_level_files", "LTX files at this level"),
        "bytes": ("ltxpool_level_bytes", "Bytes of the LTX files at this level"),
        "min_txid": ("ltxpool_level_min_txid", "Lowest TXID held at this level"),
        "max_txid": ("ltxpool_level_max_txid", "Highest TXID held at this level"),
        "gaps": ("ltxpool_level_gaps", "Gaps between consecutive files at this level"),
        "overlaps": ("ltxpool_level_overlaps", "Overlaps between consecutive files at this level"),
        "temp_files": ("ltxpool_level_temp_files", "Temp files (*.tmp) in this level directory"),
        "orphan_temp_files": ("ltxpool_level_orphan_temp_files",
                              "Temp files whose writer is gone (or foreign ones past their age)"),
        "foreign_lock_holders": ("ltxpool_level_foreign_lock_holders",
                                 "Processes other than ltxpool holding a lock file of this level (status names them)"),
        "newest_file_time": ("ltxpool_level_newest_file_timestamp_seconds",
                             "When the newest file of the level was renamed into place (Unix time)"),
    }
    families = {key: GaugeMetricFamily(name, text, labels=["replica", "level"]) for key, (name, text) in per_level.items()}
    quarantined = GaugeMetricFamily("ltxpool_replica_quarantined_files", "Files in the replica's quarantine folder",
                                    labels=["replica"])
    lost = GaugeMetricFamily("ltxpool_replica_lost_ranges", "TXID ranges held by no file at any level",
                             labels=["replica"])
    readable = GaugeMetricFamily("ltxpool_replica_readable", "1 if the replica could be read for this scrape",
                                 labels=["replica"])
    restorable = GaugeMetricFamily("ltxpool_replica_latest_restorable",
                                   "1 if the latest TXID's restore chain is complete (headers and page indexes)",
                                   labels=["replica"])
    ladder = {
        "snapshot_bytes": GaugeMetricFamily("ltxpool_replica_snapshot_bytes", "Bytes of the latest snapshot",
                                            labels=["replica"]),
        "level0_bytes": GaugeMetricFamily("ltxpool_replica_level0_bytes_since_snapshot",
                                          "Bytes of level-0 files since the latest snapshot (status: window)",
                                          labels=["replica"]),
        "compaction_bytes": GaugeMetricFamily("ltxpool_replica_compaction_bytes_since_snapshot",
                                              "Bytes of level 1-3 files over the same TXIDs", labels=["replica"]),
        "write_amplification": GaugeMetricFamily("ltxpool_replica_write_amplification",
                                                 "Compaction bytes per level-0 byte since the latest snapshot",
                                                 labels=["replica"]),
    }
    for status in statuses:
        root = escape(status.root)
        if status.unreadable is not None:
            readable.add_metric([root], 0)
            continue
        for key, family in ladder.items():
            value = None if status.ladder is None else getattr(status.ladder, key)
            if value is not None:
                family.add_metric([root], float(value))
        for level in status.levels:
            labels = [root, str(level.level)]
            for key, family in families.items():
                value = getattr(level, key)
                if value is not None:
                    family.add_metric(labels, float(value))
        quarantined.add_metric([root], status.quarantined)
        lost.add_metric([root], len(status.lost_ranges))
        readable.add_metric([root], 1)
        if status.deep:
            restorable.add_metric([root], 0 if status.restore_problems else 1)
    yield from families.values()
    yield from (quarantined, lost, readable, restorable)
    yield from ladder.values()


class StatusCollector(Collector):
    """Gathers the status of the current replicas on every scrape."""

    def __init__(self, roots: Callable[[], Sequence[str]], foreign_temp_age: float = DEFAULT_FOREIGN_TEMP_AGE) -> None:
        self._roots = roots
        self._foreign_temp_age = foreign_temp_age

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = time.time()
        yield from status_metrics([guarded_status(root, now, self._foreign_temp_age) for root in self._roots()])
