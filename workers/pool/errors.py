"""Every error the pool raises, in one place.

Root: :class:`ltxpool.errors.LtxpoolError` (path, step, errno, reason; pickles),
except :class:`CrashLoop`, the supervisor's own decision to give up, which names a
child rather than a path.
"""

from __future__ import annotations

from typing import Any

from ltxpool.errors import LtxpoolError

__all__ = ["ConfigError", "CrashLoop", "MountTableError", "NetworkFilesystemError", "ShipperStopping", "SpawnError"]


class ConfigError(LtxpoolError):
    """A configuration value or command-line argument is invalid; ``step`` names the key."""


class NetworkFilesystemError(LtxpoolError):
    """A replica root is on a network filesystem, where flock cannot be trusted."""


class MountTableError(LtxpoolError):
    """The mount table (``/proc/self/mountinfo`` or ``--mount-table``) could not be read."""


class SpawnError(LtxpoolError):
    """A child could not be started (``fork`` failed: EAGAIN under a task limit, ENOMEM).

    ``path`` names the child (``worker-1``): there is no file involved. The watcher
    retries with backoff; it is never a reason to stop the pool.
    """


class CrashLoop(Exception):
    """A child crashed more often than the policy allows: the supervisor gives up."""

    def __init__(self, name: str, crashes: int, window: float, last: str) -> None:
        super().__init__(name, crashes, window, last)
        self.name = name
        self.crashes = crashes
        self.window = window
        self.last = last

    def __reduce__(self) -> tuple[Any, ...]:
        return self.__class__, (self.name, self.crashes, self.window, self.last)

    def __str__(self) -> str:
        return f"{self.name} crashed {self.crashes} times within {self.window:g} s (last: {self.last})"


class ShipperStopping(Exception):
    """Internal to the shipper: raised between two uploads when it is asked to stop (SIGTERM), so a
    stop does not wait for a backlog. Never leaves the shipper; what was uploaded stays uploaded."""
