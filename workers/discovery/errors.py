"""Every error discovery raises, in one place.

Root: :class:`ltxpool.errors.LtxpoolError` (path, step, errno, reason; pickles).
A folder that cannot be listed or watched is not an error: it is logged once and
the rest of the entries are still watched.
"""

from __future__ import annotations

from ltxpool.errors import LtxpoolError

__all__ = ["DiscoveryError"]


class DiscoveryError(LtxpoolError):
    """The databases cannot be watched as configured: a kernel limit (``fs.inotify.*``)
    is too low for the folders to watch; ``reason`` names the limit and how to raise it."""
