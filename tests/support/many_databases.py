"""Many small real databases, their writers and the oracle: the ids each database committed.

Each database has one table ``t(id INTEGER PRIMARY KEY, v TEXT)``. A writer commits
one row per short-lived connection (its close checkpoints and deletes the WAL, as a
CLI tool's or a PHP request's does) and records the id only once ``commit`` has
returned: the set of recorded ids is exactly what the app was promised. A restore
is right when it holds exactly those ids, no fewer (a lost commit), no more.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path

from ltxpool.replica.layout import Replica
from ltxpool.replica.restore import restore

__all__ = ["create_database", "commit_row", "Writers", "restored_ids", "txid_problems"]


def create_database(path: Path, rows: int = 1, mode: str = "wal") -> set[int]:
    """A new database with ``rows`` rows; returns their ids."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA journal_mode={mode}")
        conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        conn.executemany("INSERT INTO t(id, v) VALUES (?, ?)", [(i, "x" * 50) for i in range(1, rows + 1)])
    conn.close()
    return set(range(1, rows + 1))


def commit_row(path: Path, row: int) -> None:
    """One transaction in its own connection, closed after (the last close checkpoints)."""
    conn = sqlite3.connect(path, timeout=30)
    try:
        with conn:
            conn.execute("INSERT INTO t(id, v) VALUES (?, ?)", (row, f"row {row}"))
    finally:
        conn.close()


class Writers:
    """One thread per database committing rows until stopped; ``committed`` is the oracle."""

    def __init__(self, databases: Iterable[Path], committed: dict[Path, set[int]], pause: float = 0.02) -> None:
        self.committed = committed
        self.pause = pause
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._write, args=(path,), daemon=True) for path in databases]
        self.errors: list[str] = []

    def _write(self, path: Path) -> None:
        row = max(self.committed[path], default=0)
        while not self._stop.is_set():
            row += 1
            try:
                commit_row(path, row)
            except sqlite3.Error as exc:
                self.errors.append(f"{path}: {exc}")
                return
            self.committed[path].add(row)
            self._stop.wait(self.pause)

    def __enter__(self) -> Writers:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def restored_ids(replica: str, scratch: str | None = None) -> set[int] | None:
    """The ids a restore of ``replica``'s latest TXID holds (None: nothing to restore yet)."""
    with tempfile.TemporaryDirectory(dir=scratch) as work:
        output = os.path.join(work, "restored.db")
        try:
            restore(Replica(replica), output)
        except Exception:  # noqa: BLE001 -- "not restorable yet" is an answer here
            return None
        conn = sqlite3.connect(output)
        try:
            return {row for (row,) in conn.execute("SELECT id FROM t")}
        finally:
            conn.close()


def txid_problems(replica: str) -> list[str]:
    """Every TXID that two level-0 files claim, and every hole in level 0's TXIDs.

    Each level-0 file holds one step (one TXID) after the first snapshot (level 9,
    TXID 1..T). Two files with one TXID are a forked history (two writers on the
    replica); a hole, or a first level-0 TXID that no snapshot precedes, a lost step.
    """
    root = Replica(replica)
    owners: dict[int, str] = {}
    problems = []
    for ltx in root.list_level(0).files:
        for txid in range(ltx.min_txid, ltx.max_txid + 1):
            if txid in owners:
                problems.append(f"TXID {txid} in {owners[txid]} and {ltx.name}")
            owners[txid] = ltx.name
    if owners:
        first, newest = min(owners), max(owners)
        missing = [txid for txid in range(first, newest + 1) if txid not in owners]
        if missing:
            problems.append(f"TXIDs missing from level 0: {missing[:10]}")
        if first - 1 not in {f.max_txid for f in root.list_level(9).files}:
            problems.append(f"no snapshot ends at TXID {first - 1}, before level 0's first")
    return problems
