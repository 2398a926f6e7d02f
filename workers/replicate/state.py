"""What ``replicate`` remembers between steps and across restarts, and where.

``<replica>/.ltxpool-replicate/`` (a dotfile directory, so replica listings, the
janitor and ``verify`` never see it) holds:

* ``.ltxpool.claim`` -- held for the life of a replicate process (``ltxpool.locks.claim``):
  two processes appending TXIDs to one replica would fork its history, so the
  second one is refused. The kernel drops it when the process dies.
* ``checksums`` -- the page checksum of every page 1..commit at the replicated TXID,
  8 bytes each (little-endian u64, 0 for the lock page). A step updates only the
  entries of the pages it changed, in place, so persisting costs time proportional
  to the change, not to the database.
* ``txids`` -- the database checksum of every TXID written, 16 bytes each
  (``ltxpool.replica.txid_record``): the end-to-end check ``restore`` runs, since
  the LTX files carry no database checksums (Litestream restores no file that does).
* ``state.json`` -- TXID, page size, commit, post-apply database checksum, the WAL
  or rollback position of the image, the database path, and when the last step's
  change was seen and its file durable (``seen_at``, ``durable_at``: the replication
  lag ``status`` reports). Replaced atomically.
* ``problem.json`` -- while a continuous replicate cannot step (the database is
  missing, unreadable, or a step was refused): the reason, since when, the pid.
  Removed by the next step that succeeds; ``ltxpool status`` reports it.

Order of a step: the LTX file is durable, then its TXID's record is appended to
``txids`` and fsynced, then ``checksums`` is updated and fsynced, then ``state.json``
is renamed into place. A crash can therefore leave the files a
step *behind* the replica (state.json at TXID T-1 while T is on disk), with entries
of ``checksums`` partly at T; never ahead of it. ``ltxpool.replicate.reconcile`` repairs
that on start, and verifies the result against the replica's own checksums.

The directory is opened once, from the replica root without following a link, and
every read and write goes relative to that descriptor: a tenant who swaps
``.ltxpool-replicate`` for a symlink (at any moment: replicate writes here every
step) redirects nothing. Its files are the pool's alone (0600).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import sys
from array import array
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from ltxpool.locks.errors import ClaimHeld
from ltxpool.replica.atomic import is_ltxpool_temp, pwrite_all, write_atomic
from ltxpool.replica.directory import Directory, claim_in
from ltxpool.replica.errors import DirectoryError
from ltxpool.replica.layout import PROBLEM_NAME, STATE_DIR, Replica
from ltxpool.replica.txid_record import TxidRecord
from ltxpool.replicate.errors import ReplicaBusyError, StateStoreError
from ltxpool.replicate.sqlite_source import Position, RollbackPosition, WalPosition

__all__ = [
    "STATE_DIR",
    "ReplicationState",
    "StateStore",
    "ReplicaBusyError",
    "new_checksum_array",
    "xor_all",
]

STATE_NAME = "state.json"
CHECKSUMS_NAME = "checksums"
_FORMAT = 1
_SWAP = sys.byteorder != "little"


@dataclass(frozen=True)
class ReplicationState:
    """The replica's newest TXID and the database at it (``txid == 0``: nothing yet)."""

    database: str
    txid: int = 0
    page_size: int = 0
    commit: int = 0
    checksum: int = 0
    position: Position | None = None


def new_checksum_array(pages: int = 0) -> array[int]:
    return array("Q", bytes(8 * pages))


def xor_all(checksums: array[int]) -> int:
    """XOR of every entry: the low 63 bits of the database checksum."""
    result = 0
    for value in checksums:
        result ^= value
    return result


def _position_to_json(position: Position | None) -> dict[str, object] | None:
    if position is None:
        return None
    kind = "wal" if isinstance(position, WalPosition) else "rollback"
    return {"kind": kind, **asdict(position)}


def _position_from_json(data: object) -> Position | None:
    if not isinstance(data, dict):
        return None
    fields = {k: v for k, v in data.items() if k != "kind"}
    kind = data.get("kind")
    try:
        if kind == "wal":
            return WalPosition(**fields)
        if kind == "rollback":
            return RollbackPosition(**fields)
    except TypeError:
        return None
    return None


def _little_endian(values: array[int]) -> bytes:
    if _SWAP:
        values = array("Q", values)
        values.byteswap()
    return values.tobytes()


class StateStore:
    """The state directory of one replica, claimed for as long as the store is open."""

    def __init__(self, replica_root: str | os.PathLike[str]) -> None:
        self.directory = os.path.join(os.fspath(replica_root), STATE_DIR)
        try:
            opened = Replica(replica_root).subdirectory(STATE_DIR, create=True)
        except DirectoryError as exc:
            raise StateStoreError(exc.path, "open state directory", exc.errno, exc.reason) from exc
        assert opened is not None
        self._dir: Directory = opened
        self._claim = claim_in(self._dir)
        self._held = self._claim.held()
        holders = ""
        try:
            mine = self._held.__enter__()
        except ClaimHeld as exc:
            mine = False
            holders = f"; held by {', '.join(map(str, exc.holders))}" if exc.holders else ""
        else:
            if not mine:
                self._held.__exit__(None, None, None)
        if not mine:
            self._claim.close()
            self._dir.close()
            raise ReplicaBusyError(
                self.directory, "claim replica", None, f"another ltxpool replicate is writing to this replica{holders}"
            )
        self._checksums_fd = -1
        self._txids: TxidRecord | None = None
        try:
            self._remove_orphans()
            self._txids = TxidRecord(self._dir)
        except BaseException:
            # A failed start must not keep the claim: a retry would find the replica "busy".
            self.close()
            raise

    @property
    def txids(self) -> TxidRecord:
        """The per-TXID database checksums (open while the store is)."""
        assert self._txids is not None, "opened in __init__; a failed open raised"
        return self._txids

    @property
    def state_path(self) -> str:
        return os.path.join(self.directory, STATE_NAME)

    @property
    def checksums_path(self) -> str:
        return os.path.join(self.directory, CHECKSUMS_NAME)

    @property
    def problem_path(self) -> str:
        return os.path.join(self.directory, PROBLEM_NAME)

    def record_problem(self, reason: str, since: float) -> None:
        """What keeps replicate from stepping (the database gone, unreadable), for status."""
        document = {"reason": reason, "since": since, "pid": os.getpid()}
        write_atomic(self.problem_path, json.dumps(document).encode(), directory=self._dir)

    def clear_problem(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._dir.unlink(PROBLEM_NAME)

    def _remove_orphans(self) -> None:
        # Under the claim only our own predecessor can have left temp files here.
        try:
            names = self._dir.names()
        except DirectoryError as exc:
            raise StateStoreError(exc.path, "list state directory", exc.errno, exc.reason) from exc
        for name in names:
            if is_ltxpool_temp(name):
                with contextlib.suppress(FileNotFoundError):
                    self._dir.unlink(name)

    def _read(self, name: str) -> bytes:
        """A state file's bytes; a FIFO or device planted under its name is refused, never waited on."""
        fd = self._dir.open_file(name, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(errno.EINVAL, "not a regular file")
            return f.read()

    def load(self) -> tuple[ReplicationState | None, array[int]]:
        """The saved state and checksum array; (None, empty) when missing or unreadable.

        Nothing here is trusted blindly: reconciliation checks both against the replica.
        """
        try:
            data = json.loads(self._read(STATE_NAME))
            if data.get("format") != _FORMAT:
                return None, new_checksum_array()
            state = ReplicationState(
                database=str(data["database"]),
                txid=int(data["txid"]),
                page_size=int(data["page_size"]),
                commit=int(data["commit"]),
                checksum=int(data["checksum"]),
                position=_position_from_json(data.get("position")),
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None, new_checksum_array()
        checksums = new_checksum_array()
        try:
            raw = self._read(CHECKSUMS_NAME)
        except FileNotFoundError:
            raw = b""
        except OSError as exc:
            raise StateStoreError.from_oserror(self.checksums_path, "read checksums", exc) from exc
        checksums.frombytes(raw[: len(raw) - len(raw) % 8])
        if _SWAP:
            checksums.byteswap()
        return state, checksums

    def save(self, state: ReplicationState, checksums: array[int], changed: Sequence[int] | None,
             timing: tuple[float, float] | None = None) -> None:
        """Persist after the LTX file of ``state.txid`` is durable.

        ``changed``: the page numbers whose entries changed (ascending); None rewrites
        the whole array (a snapshot). ``timing``: (seen_at, durable_at), when the change
        was noticed and when its file was durable (wall clock), kept for ``status``.
        """
        self.txids.append(state.txid, state.checksum)
        self._write_checksums(checksums, changed)
        document = {
            "format": _FORMAT,
            "database": state.database,
            "txid": state.txid,
            "page_size": state.page_size,
            "commit": state.commit,
            "checksum": state.checksum,
            "position": _position_to_json(state.position),
        }
        if timing is not None:
            document["seen_at"], document["durable_at"] = timing
        write_atomic(self.state_path, json.dumps(document, indent=1).encode(), directory=self._dir)

    def _write_checksums(self, checksums: array[int], changed: Sequence[int] | None) -> None:
        path = self.checksums_path
        try:
            if self._checksums_fd < 0:
                created = CHECKSUMS_NAME not in self._dir.names()
                self._checksums_fd = self._dir.open_file(CHECKSUMS_NAME, os.O_RDWR | os.O_CREAT, 0o600)
                if created:
                    self._dir.fsync()
            fd = self._checksums_fd
            if changed is None:
                pwrite_all(fd, _little_endian(checksums), 0)
            else:
                for first, last in _runs(changed):
                    pwrite_all(fd, _little_endian(checksums[first - 1:last]), (first - 1) * 8)
            os.ftruncate(fd, len(checksums) * 8)
            os.fsync(fd)
        except OSError as exc:
            raise StateStoreError.from_oserror(path, "write checksums", exc) from exc

    def close(self) -> None:
        if self._txids is not None:
            self._txids.close()
        if self._checksums_fd >= 0:
            os.close(self._checksums_fd)
            self._checksums_fd = -1
        self._held.__exit__(None, None, None)
        self._claim.close()
        self._dir.close()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _runs(pgnos: Sequence[int]) -> list[tuple[int, int]]:
    """Contiguous runs ``(first, last)`` of ascending page numbers: one write per run."""
    runs: list[tuple[int, int]] = []
    for pgno in pgnos:
        if runs and runs[-1][1] == pgno - 1:
            runs[-1] = (runs[-1][0], pgno)
        else:
            runs.append((pgno, pgno))
    return runs
