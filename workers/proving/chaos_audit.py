"""The audit after a crash: what must be true of a replica however its writers died.

Run on a replica whose every writer was SIGKILLed (``ltxpool.proving.chaos``), in this order,
because each check relies on the state the one before it leaves:

1. every ``*.ltx`` under a final name verifies, and the quarantine is empty (a file
   the janitor quarantined during the run was a partial file under a final name);
2. one janitor round leaves no temp file in any level directory (each one left by a
   killed writer is an orphan the janitor must recognise);
3. no lock is held: ``DirLock.cleaning(timeout=0.5)`` and the compaction claim in
   every level directory, and replicate's claim (the kernel drops a dead holder's flock);
4. a new replicate process catches up with the database (its start reconciles the
   state a kill left behind);
5. no TXID gap: ``coverage_gaps`` is empty and the restore plan reaches the latest TXID;
6. restore of the latest TXID (``PRAGMA integrity_check`` included) equals the
   database page for page.

Each finding is one line in ``problems``; a check that cannot run is a finding too.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ltxpool.errors import LtxpoolError
from ltxpool.locks.claim import Claim
from ltxpool.locks.dirlock import DirLock
from ltxpool.locks.errors import ClaimHeld, LockTimeout
from ltxpool.ltx import verify_file
from ltxpool.replica.atomic import is_ltxpool_temp
from ltxpool.replica.janitor import JanitorSettings, janitor_pass
from ltxpool.replica.layout import LEVELS, Replica
from ltxpool.replica.plan import coverage_gaps, plan_restore
from ltxpool.replica.quarantine import quarantined_files
from ltxpool.replica.restore import restore
from ltxpool.replicate.replicator import Replicator
from ltxpool.replicate.state import STATE_DIR

__all__ = ["AuditResult", "audit"]

_LOCK_TIMEOUT = 0.5


@dataclass
class AuditResult:
    problems: list[str] = field(default_factory=list)
    files_verified: int = 0
    orphans_at_end: int = 0
    latest_txid: int = 0


def _level_dirs(replica: Replica) -> list[str]:
    return [replica.level_dir(level) for level in LEVELS if os.path.isdir(replica.level_dir(level))]


def _temp_files(replica: Replica) -> list[str]:
    return [os.path.join(directory, name) for directory in _level_dirs(replica)
            for name in os.listdir(directory) if name.endswith(".tmp")]


def _check_final_names(replica: Replica, result: AuditResult) -> None:
    for directory in _level_dirs(replica):
        for name in sorted(os.listdir(directory)):
            if name.endswith(".ltx"):
                try:
                    verify_file(os.path.join(directory, name))
                    result.files_verified += 1
                except LtxpoolError as exc:
                    result.problems.append(f"not a complete file under a final name: {exc}")
    for name in quarantined_files(replica):
        result.problems.append(f"the janitor quarantined {name} during the run (a partial file under a final name?)")


def _check_orphans(replica: Replica, result: AuditResult) -> None:
    temps = _temp_files(replica)
    result.orphans_at_end = len(temps)
    foreign = [path for path in temps if not is_ltxpool_temp(os.path.basename(path))]
    if foreign:
        result.problems.append(f"temp files not named by ltxpool: {foreign[:3]}")
    report = janitor_pass(replica, JanitorSettings(), time.time())
    result.problems.extend(f"janitor: {problem}" for problem in report.problems)
    result.problems.extend(f"janitor: {group.line()}" for group in report.skipped)
    left = _temp_files(replica)
    if left:
        result.problems.append(f"{len(left)} temp files left after one janitor round: {left[:3]}")


def _check_locks(replica: Replica, result: AuditResult) -> None:
    for directory in _level_dirs(replica):
        with DirLock(directory) as lock:
            try:
                with lock.cleaning(timeout=_LOCK_TIMEOUT):
                    pass
            except LockTimeout:
                result.problems.append(f"{directory}: directory lock still held after every process died")
    for directory in [*_level_dirs(replica), os.path.join(replica.root, STATE_DIR)]:
        try:
            with Claim(directory) as claim, claim.held() as mine:
                if not mine:
                    result.problems.append(f"{directory}: claim still held after every process died")
        except ClaimHeld as exc:
            result.problems.append(f"claim still held after every process died: {exc}")


def _catch_up(replica: Replica, database: str, result: AuditResult) -> None:
    with Replicator(database, replica) as replicator:
        while replicator.step() is not None:
            pass
        result.latest_txid = replicator.state.txid


def _check_chain(replica: Replica, result: AuditResult) -> None:
    listings = replica.list_all()
    for low, high in coverage_gaps(listings):
        result.problems.append(f"TXIDs {low}-{high} are held by no file")
    plan = plan_restore(listings)
    result.problems.extend(f"restore plan: {problem}" for problem in plan.problems)
    if plan.max_txid != result.latest_txid:
        result.problems.append(f"restore plan reaches TXID {plan.max_txid}, replicate is at {result.latest_txid}")


def _check_restore(replica: Replica, database: str, output: str, result: AuditResult) -> None:
    restore(replica, output)
    source = sqlite3.connect(database)
    try:
        image = source.serialize()
    finally:
        source.close()
    with open(output, "rb") as restored:
        if restored.read() != image:
            result.problems.append(f"restore of TXID {result.latest_txid} differs from {database}")


def audit(replica: Replica, database: str, output: str) -> AuditResult:
    """Check every invariant a crash must not break; the findings are in ``problems``."""
    result = AuditResult()
    checks: list[tuple[str, Callable[[], None]]] = [
        ("final names", lambda: _check_final_names(replica, result)),
        ("orphan temp files", lambda: _check_orphans(replica, result)),
        ("locks", lambda: _check_locks(replica, result)),
        ("catch-up", lambda: _catch_up(replica, database, result)),
        ("gaps", lambda: _check_chain(replica, result)),
        ("restore", lambda: _check_restore(replica, database, output, result)),
    ]
    for name, check in checks:
        try:
            check()
        except (LtxpoolError, OSError, sqlite3.Error) as exc:
            result.problems.append(f"{name}: could not check: {exc}")
    return result
