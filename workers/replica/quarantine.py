"""Quarantine: a corrupt LTX file is moved aside with a note, never silently deleted.

``<replica>/quarantine/<level>-<name>`` holds the file exactly as it was found, and
``<...>.reason`` says why and when. The move is a rename inside the replica (atomic,
same filesystem), done under the level directory's lock; both directories are fsynced.
A quarantined file leaves a gap that planning reports, which is what an operator
should see, rather than a restore that silently skips it.
"""

from __future__ import annotations

import os
import time

from ltxpool.locks.dirlock import DirLock
from ltxpool.replica.atomic import fsync_directory, write_atomic
from ltxpool.replica.errors import QuarantineError
from ltxpool.replica.layout import LtxFile, Replica

__all__ = ["quarantine", "quarantined_files"]


def quarantine(replica: Replica, f: LtxFile, reason: str, lock: DirLock) -> str:
    """Move ``f`` into the replica's quarantine folder; return its new path.

    A symlink in place of the folder is refused: the corrupt file and its note would
    leave the replica through it.
    """
    if os.path.islink(replica.quarantine_dir):
        raise QuarantineError(replica.quarantine_dir, "quarantine", None, "is a symlink; refusing to follow it")
    try:
        os.makedirs(replica.quarantine_dir, exist_ok=True)
    except OSError as exc:
        raise QuarantineError.from_oserror(replica.quarantine_dir, "create quarantine folder", exc) from exc
    target = os.path.join(replica.quarantine_dir, f"{f.level}-{f.name}")
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    write_atomic(target + ".reason", f"{stamp} {f.path}: {reason}\n".encode())
    with lock.cleaning(timeout=5.0):
        try:
            os.rename(f.path, target)
        except OSError as exc:
            raise QuarantineError.from_oserror(f.path, "quarantine", exc) from exc
        fsync_directory(os.path.dirname(f.path))
    fsync_directory(replica.quarantine_dir)
    return target


def quarantined_files(replica: Replica) -> list[str]:
    """Names of the LTX files in quarantine (their notes excluded)."""
    try:
        return sorted(name for name in os.listdir(replica.quarantine_dir) if name.endswith(".ltx"))
    except FileNotFoundError:
        return []
