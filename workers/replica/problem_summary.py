"""Skipped names, one line per directory and reason, and no more often than needed.

A listing skips every entry whose name does not parse or that is not a regular file
(``Listing.skipped``). Logged one line per name, 1,000 junk names a tenant renames
between rounds were 1,000 new lines every round (12 MB a round, issue 13). Here a
directory and a reason make one line, ``N names skipped in DIR (reason; first: a, b,
c)``, names escaped, and :class:`SkipLog` picks the lines a round logs: a group with a
name the last round did not have at once, the same names again at most once per
``interval``. What a round logs is bounded by the number of directories and reasons,
whatever the number or length of the names.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ltxpool.display import escape

__all__ = ["SkippedNames", "group_skipped", "SkipLog", "DEFAULT_INTERVAL", "DEFAULT_SHOWN"]

#: Seconds before the same skipped names are logged again.
DEFAULT_INTERVAL = 60.0
#: Names quoted in a line, the first in sorted order.
DEFAULT_SHOWN = 3


@dataclass(frozen=True)
class SkippedNames:
    """The names one directory's listing skipped for one reason."""

    directory: str
    reason: str
    names: frozenset[str]

    def line(self, shown: int = DEFAULT_SHOWN) -> str:
        """``N names skipped in DIR (reason; first: a, b, c)``, every name escaped."""
        first = ", ".join(escape(name) for name in sorted(self.names)[:shown])
        count = len(self.names)
        return (f"{count} name{'' if count == 1 else 's'} skipped in {escape(self.directory)} "
                f"({self.reason}; first: {first})")


def group_skipped(skipped: Iterable[tuple[str, str]]) -> list[SkippedNames]:
    """``(path, reason)`` pairs, as a listing reports them, grouped by directory and reason."""
    groups: dict[tuple[str, str], set[str]] = {}
    for path, reason in skipped:
        directory, name = os.path.split(path)
        groups.setdefault((directory, reason), set()).add(name)
    return [SkippedNames(directory, reason, frozenset(names)) for (directory, reason), names in groups.items()]


@dataclass(frozen=True)
class _Logged:
    names: frozenset[str]
    at: float


class SkipLog:
    """Which skip lines a round logs; one per janitor, kept across its rounds."""

    def __init__(self, interval: float = DEFAULT_INTERVAL, shown: int = DEFAULT_SHOWN,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = interval
        self._shown = shown
        self._clock = clock
        self._last: dict[tuple[str, str], _Logged] = {}

    def due(self, groups: Iterable[SkippedNames]) -> list[str]:
        """The lines to log this round; a group absent this round is forgotten (new when it returns)."""
        now = self._clock()
        lines = []
        current: dict[tuple[str, str], _Logged] = {}
        for group in groups:
            key = (group.directory, group.reason)
            last = self._last.get(key)
            if last is None or not group.names <= last.names or now - last.at >= self._interval:
                lines.append(group.line(self._shown))
                current[key] = _Logged(group.names, now)
            else:
                current[key] = _Logged(group.names, last.at)
        self._last = current
        return lines
