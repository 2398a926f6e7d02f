"""What the bucket holds of a replica: ``<replica>/.ltxpool-remote/shipped`` (#16).

Written by the pool's shipper, read by the janitor: local retention never deletes a
file the bucket does not hold yet, so a replica with a remote keeps every file not
in this record, however old and however well covered locally. The record is the
shipper's knowledge of the bucket (a listing, then each upload it saw complete),
limited to the files the replica holds locally: it stays as small as the replica.

Format: one line per file, ``<level> <min TXID hex> <max TXID hex> <size>``, sorted;
written whole to a temp file, fsynced and renamed (``write_atomic``), so a reader sees
the old record or the new one. A missing record means "the bucket holds nothing we
know of"; a line that does not parse is skipped (it can only make the janitor keep
more). The replica layer knows nothing of S3: to it this is a set of names.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable

from ltxpool.replica.atomic import write_atomic
from ltxpool.replica.errors import DirectoryError
from ltxpool.replica.layout import LtxFile, Replica

__all__ = ["SHIPPED_DIR", "SHIPPED_NAME", "Shipped", "read_shipped", "write_shipped", "shipped_key"]

SHIPPED_DIR = ".ltxpool-remote"
SHIPPED_NAME = "shipped"
#: A record bigger than this is no record of ours: read as empty (keep everything).
_MAX_BYTES = 64 << 20

#: ``(level, min TXID, max TXID, size)`` of one file the bucket holds.
Shipped = tuple[int, int, int, int]


def shipped_key(f: LtxFile) -> Shipped:
    return f.level, f.min_txid, f.max_txid, f.size


def _parse(text: str) -> set[Shipped]:
    found: set[Shipped] = set()
    for line in text.splitlines():
        fields = line.split()
        if len(fields) != 4:
            continue
        try:
            found.add((int(fields[0]), int(fields[1], 16), int(fields[2], 16), int(fields[3])))
        except ValueError:
            continue
    return found


def read_shipped(replica: Replica) -> set[Shipped]:
    """The files the record says the bucket holds (empty when there is no record yet)."""
    try:
        directory = replica.subdirectory(SHIPPED_DIR)
    except DirectoryError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            return set()
        raise
    if directory is None:
        return set()
    with directory:
        try:
            fd = directory.open_file(SHIPPED_NAME, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return set()
        with os.fdopen(fd, "rb") as record:
            data = record.read(_MAX_BYTES + 1)
    if len(data) > _MAX_BYTES:
        return set()
    return _parse(data.decode("ascii", "replace"))


def write_shipped(replica: Replica, files: Iterable[Shipped]) -> None:
    """Replace the record with ``files``, durably (temp file, fsync, rename, directory fsync)."""
    text = "".join(f"{level} {low:016x} {high:016x} {size}\n" for level, low, high, size in sorted(set(files)))
    directory = replica.subdirectory(SHIPPED_DIR, create=True)
    assert directory is not None
    with directory:
        write_atomic(directory.display(SHIPPED_NAME), text.encode("ascii"), directory=directory)
