"""The coordination protocol of ltxpool, and nothing else: it knows no LTX.

- :class:`locks.dirlock.DirLock`: the per-directory lock a writer holds for its whole
  write -> fsync -> rename and the janitor holds while it sweeps.
- :class:`locks.claim.Claim`: a non-blocking per-(replica, level) compaction claim.
"""
