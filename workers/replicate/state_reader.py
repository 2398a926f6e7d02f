"""``state.json`` as a reader sees it: what ``status`` needs, without the replicate's claim.

:class:`ltxpool.replicate.state.StateStore` claims the replica for as long as it is
open, so only the replicate itself may use it. ``status`` reads the same file with
no lock: the file is replaced atomically, so a read sees one whole version. It is
reached from the replica root without following a link and never read past
``_LIMIT`` bytes (a tenant may plant anything there).

Two optional keys, written by the pool's replicate steps (issue 15):
``seen_at`` (Unix time the pool noticed the change the step wrote) and
``durable_at`` (Unix time that step's LTX file was durable). A replica written by
an older ltxpool, or by a manual ``ltxpool replicate``, has neither: its lag is
unknown, which is not an error.
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
from dataclasses import dataclass

from ltxpool.replica.errors import DirectoryError
from ltxpool.replica.layout import Replica
from ltxpool.replicate.errors import StateStoreError
from ltxpool.replicate.state import STATE_NAME

__all__ = ["RecordedState", "read_recorded_state"]

# state.json is a few hundred bytes; never read more of a file a tenant may have planted.
_LIMIT = 65536


@dataclass(frozen=True)
class RecordedState:
    """The database a replica belongs to, its TXID, and when its latest step was seen and durable."""

    database: str
    txid: int
    seen_at: float | None = None
    durable_at: float | None = None

    @property
    def last_lag(self) -> float | None:
        """Seconds from the change being seen to its level-0 file being durable; None: unknown."""
        if self.seen_at is None or self.durable_at is None:
            return None
        return max(self.durable_at - self.seen_at, 0.0)


def _time(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def read_recorded_state(replica: Replica) -> RecordedState | None:
    """The replica's recorded state; None when it has none (never replicated by ltxpool).

    A state file that is there but cannot be read or parsed is a :class:`StateStoreError`.
    """
    path = os.path.join(replica.state_dir, STATE_NAME)
    try:
        fd = replica.open_state_file(STATE_NAME)
    except DirectoryError as exc:
        raise StateStoreError(exc.path, "read state", exc.errno, exc.reason) from exc
    except OSError as exc:
        raise StateStoreError.from_oserror(path, "read state", exc) from exc
    if fd is None:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise StateStoreError(path, "read state", errno.EINVAL, "not a regular file")
        data = json.loads(os.read(fd, _LIMIT))
        return RecordedState(str(data["database"]), int(data["txid"]),
                             _time(data.get("seen_at")), _time(data.get("durable_at")))
    except OSError as exc:
        raise StateStoreError.from_oserror(path, "read state", exc) from exc
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise StateStoreError(path, "read state", None, f"not a state file: {type(exc).__name__}") from exc
    finally:
        os.close(fd)
