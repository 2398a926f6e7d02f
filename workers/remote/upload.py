"""Shipping a replica's durable LTX files into the bucket: complete objects only, once each.

An object becomes visible only complete. Below ``multipart_threshold`` a file is one
PUT (S3 stores a PUT whole or not at all); above it, a multipart upload whose parts
(``concurrency`` in flight at once, each read just before it is sent) are invisible
until ``CompleteMultipartUpload``, sent last, after every part succeeded. A failure between
parts aborts the upload; a process killed between parts leaves an incomplete
upload that nothing lists as an object, and the next ship of that key aborts it
(with the prefix's lease held, ``ltxpool.remote.lease``, no other writer's upload
can be in flight there) and starts again. ``abort_stale_uploads`` clears what a dead
shipper left under the whole prefix, for the janitor.

Every object is sent with ``Content-MD5`` (the store refuses a body damaged on the
way) and ``If-None-Match: *``: an existing object is never overwritten. A retried
PUT or completion whose first answer was lost meets its own success as a 412 or
``NoSuchUpload``; the object's size then tells whether it is ours.

What is shipped is what verifies: each local file is decoded in full first (the
codec's checksums, page index, name against header), and the bytes uploaded are
read from the same open descriptor. A file that does not verify is reported, not
shipped, and left to the janitor's quarantine. Shipping is idempotent: a key the
bucket holds with the same size is not sent again; with another size it is a
conflict, reported and never overwritten.

Order: level 9 first (a snapshot makes the copy restorable soonest), then 3, 2, 1,
0; within a level oldest first (by TXID), so each level in the bucket is a prefix
of the local one at every moment.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import functools
import hashlib
import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from ltxpool.ltx import name_problem, open_ltx
from ltxpool.ltx.errors import CorruptLTXError, LtxOpenError
from ltxpool.remote.errors import RemoteConflictError, RemoteRequestError
from ltxpool.remote.layout import list_all, object_key
from ltxpool.remote.retry import call
from ltxpool.remote.target import RemoteTarget
from ltxpool.replica.layout import LtxFile, Replica, parse_name

__all__ = [
    "MULTIPART_THRESHOLD",
    "PART_SIZE",
    "SHIP_ORDER",
    "ShipReport",
    "ShipSettings",
    "abort_stale_uploads",
    "ship_file",
    "ship_replica",
]

MULTIPART_THRESHOLD = 16 << 20
#: S3 takes parts of 5 MiB to 5 GiB (the last may be smaller), at most 10,000 of them.
PART_SIZE = 8 << 20
MIN_PART_SIZE = 5 << 20
#: As ``aws s3 cp`` overlaps its parts (10 there); 4 keeps at most 32 MiB of parts in memory.
PART_CONCURRENCY = 4
_MAX_PARTS = 10_000
SHIP_ORDER = (9, 3, 2, 1, 0)
_READ_CHUNK = 1 << 20
_ABSENT = ("404", "NoSuchKey", "NotFound")
_EXISTS = ("PreconditionFailed", "412")


@dataclass(frozen=True)
class ShipSettings:
    multipart_threshold: int = MULTIPART_THRESHOLD
    part_size: int = PART_SIZE
    #: Parts of one multipart upload in flight at once (memory: this many parts).
    concurrency: int = PART_CONCURRENCY

    def __post_init__(self) -> None:
        if self.part_size < MIN_PART_SIZE:
            raise ValueError(f"part size must be at least {MIN_PART_SIZE} bytes (S3's minimum), not {self.part_size}")
        if self.concurrency < 1:
            raise ValueError("part concurrency must be at least 1")
        if self.multipart_threshold < 1:
            raise ValueError("multipart threshold must be at least 1 byte")


@dataclass
class ShipReport:
    """What one ship did: keys uploaded, and everything it did not upload and why."""

    uploaded: list[str] = field(default_factory=list)
    bytes_uploaded: int = 0
    #: Files the bucket already held (same size): not sent again.
    present: int = 0
    #: Local files gone before they were read (retention ran): nothing to ship.
    vanished: list[str] = field(default_factory=list)
    #: Local files that do not verify, with the reason: not shipped (the janitor quarantines them).
    corrupt: list[tuple[str, str]] = field(default_factory=list)
    #: Keys the bucket holds with another size: never overwritten.
    conflicts: list[tuple[str, str]] = field(default_factory=list)
    #: ``(level, min TXID, max TXID, size)`` of every local file the bucket holds after this ship.
    held_local: list[tuple[int, int, int, int]] = field(default_factory=list)
    #: The mtime (durable time) of the oldest local file the bucket lacked before this ship.
    oldest_missing: float | None = None

    @property
    def nothing_to_do(self) -> bool:
        return not self.uploaded


def _remote_size(client: Any, target: RemoteTarget, key: str) -> int | None:
    try:
        head = call(target.display(key), "head object",
                    lambda: client.head_object(Bucket=target.bucket, Key=key), expected=_ABSENT)
    except ClientError:
        return None
    return int(head["ContentLength"])


def _md5(data: bytes | memoryview) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()


def _pread_exact(fd: int, size: int, offset: int, path: str) -> bytes:
    try:
        data = os.pread(fd, size, offset)
    except OSError as exc:
        raise LtxOpenError.from_oserror(path, "read for upload", exc) from exc
    if len(data) != size:
        raise CorruptLTXError(path, offset + len(data), f"file shrank while it was shipped ({len(data)} of {size} bytes)")
    return data


def _already_ours(client: Any, target: RemoteTarget, key: str, size: int) -> bool:
    """After a 412 or a lost completion: does the bucket hold our object under ``key``?"""
    found = _remote_size(client, target, key)
    if found == size:
        return True
    if found is None:
        return False
    raise RemoteConflictError(target.display(key), "upload", None,
                              f"the bucket holds another object of {found} bytes under this name (ours: {size})")


def _put(client: Any, target: RemoteTarget, key: str, fd: int, size: int, path: str) -> None:
    data = _pread_exact(fd, size, 0, path)
    digest = _md5(data)
    try:
        call(target.display(key), "put object", lambda: client.put_object(
            Bucket=target.bucket, Key=key, Body=data, ContentLength=size, ContentMD5=digest, IfNoneMatch="*",
        ), expected=_EXISTS)
    except ClientError:
        if not _already_ours(client, target, key, size):
            raise


def _abort(client: Any, target: RemoteTarget, key: str, upload_id: str) -> None:
    # If this fails too, abort_stale_uploads clears it: an incomplete upload is never an object.
    with contextlib.suppress(ClientError, RemoteRequestError):
        call(target.display(key), "abort multipart upload", lambda: client.abort_multipart_upload(
            Bucket=target.bucket, Key=key, UploadId=upload_id), expected=("NoSuchUpload",), attempts=3)


def _abort_earlier_uploads(client: Any, target: RemoteTarget, key: str) -> None:
    """Uploads of ``key`` a killed shipper left: with the lease held, nobody else's."""
    page = call(target.display(key), "list multipart uploads",
                lambda: client.list_multipart_uploads(Bucket=target.bucket, Prefix=key))
    for upload in page.get("Uploads", ()):
        if upload.get("Key") == key:
            _abort(client, target, key, str(upload["UploadId"]))


def _send_part(client: Any, target: RemoteTarget, key: str, upload_id: str, fd: int, number: int, offset: int,
               length: int, path: str) -> tuple[int, str]:
    """Read and upload one part (in a worker thread: ``pread`` and the boto3 client are both thread-safe)."""
    data = _pread_exact(fd, length, offset, path)
    answer = call(target.display(key), f"upload part {number}", functools.partial(
        client.upload_part, Bucket=target.bucket, Key=key, UploadId=upload_id, PartNumber=number,
        Body=data, ContentLength=length, ContentMD5=_md5(data)))
    return number, str(answer["ETag"])


def _multipart(client: Any, target: RemoteTarget, key: str, fd: int, size: int, path: str, part_size: int,
               concurrency: int) -> int:
    """Parts ``concurrency`` at a time (memory: at most that many parts read at once), completion last."""
    part_size = max(part_size, -(-size // _MAX_PARTS))
    _abort_earlier_uploads(client, target, key)
    where = target.display(key)
    created = call(where, "create multipart upload",
                   lambda: client.create_multipart_upload(Bucket=target.bucket, Key=key))
    upload_id = str(created["UploadId"])
    completed = False
    try:
        etags: dict[int, str] = {}
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="ltxpool-part") as threads:
            in_flight: set[Future[tuple[int, str]]] = set()
            try:
                for number, offset in enumerate(range(0, size, part_size), start=1):
                    if len(in_flight) >= concurrency:
                        done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                        etags.update(future.result() for future in done)
                    in_flight.add(threads.submit(_send_part, client, target, key, upload_id, fd, number, offset,
                                                 min(part_size, size - offset), path))
                etags.update(future.result() for future in in_flight)
            finally:
                for future in in_flight:
                    future.cancel()
        parts = [{"PartNumber": number, "ETag": etags[number]} for number in sorted(etags)]
        try:
            call(where, "complete multipart upload", lambda: client.complete_multipart_upload(
                Bucket=target.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts},
                IfNoneMatch="*",
            ), expected=("NoSuchUpload", *_EXISTS))
        except ClientError:
            # A completion whose answer was lost: the retry finds no upload, or the object.
            if not _already_ours(client, target, key, size):
                raise
        completed = True
        return len(parts)
    finally:
        if not completed:
            _abort(client, target, key, upload_id)


def _verified(decoder: Any) -> None:
    problem = name_problem(decoder.path, decoder.header)
    if problem is not None:
        raise CorruptLTXError(decoder.path, 16, problem)
    deque(decoder.frames(), maxlen=0)


def ship_file(
    client: Any,
    target: RemoteTarget,
    level: int,
    local: str | os.PathLike[str] | LtxFile,
    *,
    settings: ShipSettings = ShipSettings(),
    known_absent: bool = False,
) -> int | None:
    """Upload one local LTX file of ``level`` unless the bucket holds it: bytes sent, or None (there).

    ``local``: a path, or a listed :class:`LtxFile` (read relative to the directory
    it was listed from, never through a link). ``known_absent``: a listing just
    showed the key missing, so no HEAD is asked first. Raises CorruptLTXError for a
    file that does not verify, LtxOpenError for one that cannot be opened (vanished:
    ``errno`` ENOENT), RemoteConflictError, RemoteRequestError.
    """
    path, dir_fd = (local.path, local.dir_fd) if isinstance(local, LtxFile) else (os.fspath(local), None)
    txids = parse_name(os.path.basename(path))
    if txids is None:
        raise CorruptLTXError(path, 0, "name is not <min>-<max>.ltx: not shipped")
    key = object_key(target, level, *txids)
    with open_ltx(path, dir_fd=dir_fd, verify_index=True) as decoder:
        _verified(decoder)
        fd = decoder.stream.fileno()
        size = os.fstat(fd).st_size
        if not known_absent:
            found = _remote_size(client, target, key)
            if found == size:
                return None
            if found is not None:
                raise RemoteConflictError(target.display(key), "upload", None,
                                          f"the bucket holds {found} bytes under this name, the local file {size}")
        if size < settings.multipart_threshold:
            _put(client, target, key, fd, size, path)
        else:
            _multipart(client, target, key, fd, size, path, settings.part_size, settings.concurrency)
    return size


def ship_replica(
    replica: Replica, client: Any, target: RemoteTarget, *, settings: ShipSettings = ShipSettings(),
    held: dict[str, int] | None = None, before_upload: Callable[[str], None] | None = None,
) -> ShipReport:
    """Upload every durable LTX file of ``replica`` the bucket lacks (see the module's notes).

    Listing the bucket decides what it lacks, so a ship after a crash or a kill
    resumes where the last one stopped and sends nothing twice. ``held``: what a
    recent listing found (key -> size), for a caller that ships often (the pool's
    shipper, holding the prefix's lease, so nobody else adds to it): not listed
    again, and each upload is added to it. A wrong guess costs nothing: uploads are
    conditional, and a key already there with our size counts as ours. A failed
    request (after retries) stops the ship with RemoteRequestError: what was
    uploaded stays (and is in ``held``). ``before_upload(key)`` runs before each
    upload: the shipper renews its lease there and tells the supervisor it is alive.
    """
    report = ShipReport()
    if held is None:
        held = {
            object_key(target, f.level, f.min_txid, f.max_txid): f.size
            for listing in list_all(client, target).values() for f in listing.files
        }
    remote = held
    for level in SHIP_ORDER:
        listing = replica.list_level(level)
        try:
            for f in listing.files:
                key = object_key(target, level, f.min_txid, f.max_txid)
                if key in remote:
                    if remote[key] == f.size:
                        report.present += 1
                        report.held_local.append((level, f.min_txid, f.max_txid, f.size))
                    else:
                        report.conflicts.append((target.display(key), f"the bucket holds {remote[key]} bytes, "
                                                 f"the local file {f.size}"))
                    continue
                if report.oldest_missing is None or f.mtime < report.oldest_missing:
                    report.oldest_missing = f.mtime
                if before_upload is not None:
                    before_upload(key)
                try:
                    sent = ship_file(client, target, level, f, settings=settings, known_absent=True)
                except CorruptLTXError as exc:
                    report.corrupt.append((f.path, exc.reason))
                    continue
                except LtxOpenError as exc:
                    if exc.errno != errno.ENOENT:
                        raise
                    report.vanished.append(f.path)
                    continue
                except RemoteConflictError as exc:
                    report.conflicts.append((exc.path, exc.reason))
                    continue
                remote[key] = f.size
                report.held_local.append((level, f.min_txid, f.max_txid, f.size))
                if sent is not None:
                    report.uploaded.append(key)
                    report.bytes_uploaded += sent
        finally:
            if listing.directory is not None:
                listing.directory.close()
    return report


def abort_stale_uploads(client: Any, target: RemoteTarget, *, older_than: float, now: float) -> list[str]:
    """Abort the incomplete multipart uploads under the prefix started before ``now - older_than``.

    For the janitor: a shipper killed between parts leaves one, which costs storage
    but is never an object. Returns the keys whose uploads were aborted.
    """
    aborted = []
    args: dict[str, Any] = {"Bucket": target.bucket, "Prefix": target.prefix + "/"}
    while True:
        page = call(target.display(target.prefix + "/"), "list multipart uploads",
                    functools.partial(client.list_multipart_uploads, **args))
        for upload in page.get("Uploads", ()):
            started = upload.get("Initiated")
            if started is not None and started.timestamp() <= now - older_than:
                _abort(client, target, str(upload["Key"]), str(upload["UploadId"]))
                aborted.append(str(upload["Key"]))
        if not page.get("IsTruncated"):
            return aborted
        args["KeyMarker"] = page.get("NextKeyMarker")
        args["UploadIdMarker"] = page.get("NextUploadIdMarker")
