"""How often each reliability test really exercised its fault, for tests/reliability/RELIABILITY.md.

A fault test that never fired its fault proves nothing, so each one counts what it
did (kills delivered, errors injected, files mutated) and asserts the count is
above zero. ``record`` also prints the count (``pytest -rP`` shows it) and, when
``LTXPOOL_FAULT_COUNTS`` names a file, appends it there as one JSON line: that file
is where the table's "count in the last run" column comes from.
"""

from __future__ import annotations

import json
import os

__all__ = ["record"]


def record(fault: str, count: int, **details: object) -> None:
    """Report that ``fault`` was exercised ``count`` times (plus any detail worth keeping)."""
    print(f"FAULT COUNT {fault}: {count} {details if details else ''}".rstrip())
    target = os.environ.get("LTXPOOL_FAULT_COUNTS")
    if target:
        with open(target, "a", encoding="utf-8") as out:
            out.write(json.dumps({"fault": fault, "count": count, **details}, default=str) + "\n")
