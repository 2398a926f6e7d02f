"""What a child tells the supervisor: small frozen dataclasses, one per kind of news.

Sent over the child's own pipe (pickled), read by ``ChildProcess.receive`` (which
keeps what the child is doing, for hang detection and the logs) and counted by
``PoolMetrics.record``. Never tuples to unpack by position, never log text to parse.
Errors travel as ltxpool's own exceptions, which pickle with path, step and errno.
"""

from __future__ import annotations

from dataclasses import dataclass

from ltxpool.replica.compactor import CompactionResult
from ltxpool.replica.janitor import JanitorReport

__all__ = [
    "Event",
    "Heartbeat",
    "Idle",
    "Busy",
    "StillBusy",
    "Compacted",
    "CompactionFailed",
    "Replicated",
    "ReplicationFailed",
    "DatabasesKnown",
    "JanitorReported",
    "JanitorRound",
    "JanitorFailed",
    "Shipped",
    "ShipFailed",
    "Crashed",
]


@dataclass(frozen=True)
class Heartbeat:
    """Alive and waiting; sent at least every heartbeat interval while asleep."""


@dataclass(frozen=True)
class Idle:
    """The item in hand is done; the hang deadline stops."""


@dataclass(frozen=True)
class Busy:
    """About to work on one item (``what``), ``lag`` seconds after it was due.

    ``replica``: the replica root the item is about ("" if none), so that a child that
    dies or hangs on it is charged to that replica, not to the pool (issue 13).
    """

    what: str
    lag: float = 0.0
    replica: str = ""


@dataclass(frozen=True)
class StillBusy:
    """Still on the item of the last ``Busy``, and getting on with it (one more try of a
    request): the hang deadline starts again; what the child is doing stays as it was."""


@dataclass(frozen=True)
class Compacted:
    """A worker wrote one compaction."""

    result: CompactionResult


@dataclass(frozen=True)
class CompactionFailed:
    """A worker's pass over ``replica`` failed; it retries with backoff."""

    replica: str
    error: BaseException


@dataclass(frozen=True)
class Replicated:
    """A worker wrote one level-0 file (or snapshot) of ``database``; ``lag``: seconds from
    noticing the change to the file being durable."""

    database: str
    replica: str
    txid: int
    bytes: int
    snapshot: bool
    lag: float


@dataclass(frozen=True)
class ReplicationFailed:
    """A step of ``database`` failed; the worker retries it with backoff."""

    database: str
    error: BaseException


@dataclass(frozen=True)
class DatabasesKnown:
    """A worker's share changed: how many databases it replicates, how many it retired since
    it started, and the change-notification watches it holds."""

    worker: int
    databases: int
    retired: int
    watches: int


@dataclass(frozen=True)
class JanitorReported:
    """A janitor pass over one replica that changed something (quiet passes send nothing)."""

    report: JanitorReport


@dataclass(frozen=True)
class JanitorRound:
    """A janitor round over all replicas ended; ``replicas`` of them were cleaned or found unchanged.

    ``examined``: level directories that got a full pass (listed, their lock built);
    ``unchanged``: level directories left alone on one ``lstat`` each, their replica
    unchanged since a clean pass; ``seconds``: how long the round took.
    """

    replicas: int
    examined: int = 0
    unchanged: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class JanitorFailed:
    """The janitor's pass over ``replica`` failed; it goes on with the next one."""

    replica: str
    error: BaseException


@dataclass(frozen=True)
class Shipped:
    """The shipper's pass over one replica with a remote: ``objects`` uploaded (``bytes``);
    ``lag``: seconds from the oldest local file the bucket lacked being durable to this
    pass (0: it lacked none); ``pending``: local files still not in the bucket after it."""

    replica: str
    objects: int
    bytes: int
    lag: float
    pending: int


@dataclass(frozen=True)
class ShipFailed:
    """The shipper's pass over ``replica`` failed or was refused (another pool's lease, a store
    without conditional writes); it retries with backoff."""

    replica: str
    error: BaseException


@dataclass(frozen=True)
class Crashed:
    """The role function raised unexpectedly: ``line`` is ``TYPE: message``; exit 1 follows."""

    line: str


Event = (Heartbeat | Idle | Busy | StillBusy | Compacted | CompactionFailed | Replicated | ReplicationFailed
         | DatabasesKnown | JanitorReported | JanitorRound | JanitorFailed | Shipped | ShipFailed | Crashed)
