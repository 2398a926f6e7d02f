"""The coordination protocol of ltxpool, and nothing else: it knows no LTX.

- :class:`ltxpool.locks.dirlock.DirLock`: the per-directory lock a writer holds for its whole
  write -> fsync -> rename and the janitor holds while it sweeps.
- :class:`ltxpool.locks.claim.Claim`: a non-blocking per-(replica, level) compaction claim.
- :func:`ltxpool.locks.holders.holders_of`: who holds a lock file (pid, user, command),
  for the error of a wait that ran out and for ``status``.
"""

from __future__ import annotations

from ltxpool.locks.claim import CLAIM_NAME, Claim
from ltxpool.locks.dirlock import DirLock, holders_in, lock_file_names
from ltxpool.locks.errors import ClaimHeld, LockFileError, LockTimeout
from ltxpool.locks.holders import Holder, holders_of

__all__ = ["CLAIM_NAME", "Claim", "ClaimHeld", "DirLock", "Holder", "LockFileError", "LockTimeout",
           "holders_in", "holders_of", "lock_file_names"]

