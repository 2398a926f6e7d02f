"""Restore and verify straight from a bucket: the replica layer's checks, objects as inputs.

A new host with nothing but the bucket's credentials lists the prefix's levels
(``layout.list_all``), and the replica layer plans, checks and merges those
listings as it does a local replica's (``ltxpool.replica.restore.restore_listings``):
the same newest-wins merge into the atomic writer, LTX checksums, chain check and
``PRAGMA integrity_check``. Objects are streamed (``source.ObjectReader``), so memory
stays one read buffer per input whatever the database's size. The bucket holds no
per-TXID checksum record (replicate keeps it locally), so the database checksum is
checked only where a file carries a post-apply checksum.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ltxpool.errors import LtxpoolError
from ltxpool.ltx import name_problem
from ltxpool.ltx.errors import CorruptLTXError
from ltxpool.remote.layout import list_all
from ltxpool.remote.source import RemoteSource
from ltxpool.remote.target import RemoteTarget
from ltxpool.replica.access import PRIVATE
from ltxpool.replica.chain_check import ChainProblem, check_txid, restorable_txids
from ltxpool.replica.layout import Listing, LtxFile, open_ltx_file
from ltxpool.replica.restore import RestoreResult, restore_listings

__all__ = ["FileVerdict", "remote_listings", "restore_remote", "verify_remote", "check_remote_chains"]


def remote_listings(client: Any, target: RemoteTarget) -> dict[int, Listing]:
    """Every level of the target, each file readable through a :class:`RemoteSource`."""
    return list_all(client, target, RemoteSource(client, target))


def restore_remote(
    client: Any, target: RemoteTarget, output: str | os.PathLike[str], txid: int | None = None, *,
    allow_gap: bool = False, mode: int = PRIVATE.file_mode, check_integrity: bool = True,
) -> RestoreResult:
    """Write the database at ``txid`` (default: the latest) from the bucket to the new file ``output``."""
    return restore_listings(remote_listings(client, target), output, txid, allow_gap=allow_gap, mode=mode,
                            check_integrity=check_integrity)


@dataclass(frozen=True)
class FileVerdict:
    path: str
    #: None: the object verifies; else the error that names where it went wrong.
    error: LtxpoolError | None


def _verify_one(f: LtxFile) -> FileVerdict:
    try:
        with open_ltx_file(f, verify_index=True) as decoder:
            problem = name_problem(f.path, decoder.header)
            if problem is not None:
                raise CorruptLTXError(f.path, 16, problem)
            deque(decoder.frames(), maxlen=0)
    except LtxpoolError as exc:
        return FileVerdict(f.path, exc)
    return FileVerdict(f.path, None)


def verify_remote(listings: dict[int, Listing]) -> Iterator[FileVerdict]:
    """Every object of the listings verified in full (streamed), by level then TXID."""
    for level in sorted(listings):
        for f in listings[level].files:
            yield _verify_one(f)


def check_remote_chains(listings: dict[int, Listing], *, every_txid: bool = False) -> tuple[int, list[ChainProblem]]:
    """(restore chains checked, the problems): the latest TXID, or every TXID a file ends at."""
    if not any(listing.files for listing in listings.values()):
        return 0, []
    txids: list[int | None] = list(restorable_txids(listings)) if every_txid else [None]
    return len(txids), [p for txid in txids if (p := check_txid(listings, txid)) is not None]
