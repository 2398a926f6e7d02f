"""Quarantine: a corrupt LTX file is moved aside with a note, never silently deleted.

``<replica>/quarantine/<level>-<name>`` holds the file exactly as it was found, and
``<...>.reason`` says why and when. The move is a rename inside the replica (atomic,
same filesystem), done under the level directory's lock; both directories are fsynced.
A quarantined file leaves a gap that planning reports, which is what an operator
should see, rather than a restore that silently skips it.
"""

from __future__ import annotations

import time

from ltxpool.locks.dirlock import DirLock
from ltxpool.replica.atomic import write_atomic
from ltxpool.replica.errors import DirectoryError, QuarantineError
from ltxpool.replica.layout import QUARANTINE_DIR, LtxFile, Replica

__all__ = ["quarantine", "quarantined_files"]


def quarantine(replica: Replica, f: LtxFile, reason: str, lock: DirLock) -> str:
    """Move ``f`` into the replica's quarantine folder; return its new path.

    The move is a ``renameat`` from the directory ``f`` was listed from into the
    quarantine folder opened from the root without following links: a symlink in
    place of either is refused (the corrupt file and its note would leave the
    replica through it), and a swap during the lock wait moves nothing else.
    """
    assert f.directory is not None, "only a listed file is quarantined"
    try:
        folder = replica.subdirectory(QUARANTINE_DIR, create=True)
    except DirectoryError as exc:
        raise QuarantineError(exc.path, "open quarantine folder", exc.errno, exc.reason) from exc
    assert folder is not None
    with folder:
        target = f"{f.level}-{f.name}"
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        write_atomic(folder.display(target + ".reason"), f"{stamp} {f.path}: {reason}\n".encode(), directory=folder)
        with lock.cleaning(timeout=5.0):
            try:
                f.directory.rename(f.name, folder, target)
                f.directory.fsync()
            except OSError as exc:
                raise QuarantineError.from_oserror(f.path, "quarantine", exc) from exc
        try:
            folder.fsync()
        except OSError as exc:
            raise QuarantineError.from_oserror(folder.path, "quarantine", exc) from exc
        return folder.display(target)


def quarantined_files(replica: Replica) -> list[str]:
    """Names of the LTX files in quarantine (their notes excluded)."""
    try:
        folder = replica.subdirectory(QUARANTINE_DIR)
    except DirectoryError as exc:
        raise QuarantineError(exc.path, "list quarantine folder", exc.errno, exc.reason) from exc
    if folder is None:
        return []
    with folder:
        return sorted(name for name in folder.names() if name.endswith(".ltx"))
