"""The coordination protocol of ltxpool, and nothing else: it knows no LTX.

- :class:`ltxpool.locks.dirlock.DirLock`: the per-directory lock a writer holds for its whole
  write -> fsync -> rename and the janitor holds while it sweeps.
- :class:`ltxpool.locks.claim.Claim`: a non-blocking per-(replica, level) compaction claim.
"""

from __future__ import annotations

from ltxpool.locks.claim import Claim
from ltxpool.locks.dirlock import DirLock
from ltxpool.locks.errors import LockFileError, LockTimeout

__all__ = ["Claim", "DirLock", "LockFileError", "LockTimeout"]
