"""One writer per prefix: a lease object written with S3 conditional writes.

Two pools on two hosts shipping into one prefix would each upload their own LTX
files for overlapping TXIDs (their compactions differ byte for byte), and a
restore would mix them. So a shipper first takes ``<prefix>/.ltxpool-lease``:

* acquire: ``PUT`` with ``If-None-Match: *`` creates it only if no one holds it. If
  it exists, it is read: ours (a restart with the same owner id), expired (its
  holder stopped renewing: taken over with ``If-Match`` on the ETag read, so two
  takers cannot both win), or held -- :class:`LeaseHeld`, naming the holder.
* renew: ``PUT`` with ``If-Match`` on our last ETag; a 412 means someone took the
  lease over (ours had expired): :class:`LeaseLost`, and the shipper must stop.
* release: ``DELETE`` with ``If-Match`` on our ETag (never someone else's lease).

This is only as good as the store's conditional writes. A store that ignores
``If-None-Match`` would let both pools "create" the lease, so before the first
acquire the store is probed (``check_conditional_writes``): a second conditional
PUT of a key that exists must fail with 412. If it succeeds, or the store rejects
the header, ltxpool refuses to ship there (:class:`ConditionalWritesUnsupported`).

The lease body is JSON: owner id (``host:pid:token``), host, pid, when it was
taken and until when it holds (Unix seconds, the holder's clock: keep a TTL well
above the clock skew between hosts).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from ltxpool.remote.errors import ConditionalWritesUnsupported, LeaseHeld, LeaseLost, RemoteRequestError
from ltxpool.remote.layout import LEASE_NAME
from ltxpool.remote.retry import call, error_code
from ltxpool.remote.target import RemoteTarget

__all__ = [
    "DEFAULT_TTL",
    "Lease",
    "Owner",
    "acquire_lease",
    "check_conditional_writes",
    "lease_key",
    "release_lease",
    "renew_lease",
]

DEFAULT_TTL = 120.0
_PRECONDITION = ("PreconditionFailed", "412")
_ABSENT = ("NoSuchKey", "404", "NotFound")
# What stores that do not know the header answer (instead of ignoring it).
_UNSUPPORTED = ("NotImplemented", "501", "InvalidArgument", "InvalidRequest")


@dataclass(frozen=True)
class Owner:
    host: str
    pid: int
    token: str

    @property
    def id(self) -> str:
        return f"{self.host}:{self.pid}:{self.token}"

    @classmethod
    def here(cls) -> Owner:
        return cls(socket.gethostname(), os.getpid(), secrets.token_hex(8))


@dataclass(frozen=True)
class Lease:
    """A lease we hold: the ETag of our last write of it is what renew and release check."""

    target: RemoteTarget
    owner: Owner
    etag: str
    expires: float


def lease_key(target: RemoteTarget) -> str:
    return f"{target.prefix}/{LEASE_NAME}"


def _body(owner: Owner, now: float, ttl: float) -> bytes:
    return json.dumps({"owner": owner.id, "host": owner.host, "pid": owner.pid,
                       "acquired": now, "expires": now + ttl}).encode()


def _put(client: Any, target: RemoteTarget, key: str, body: bytes, **condition: str) -> str:
    answer = call(target.display(key), "write lease", lambda: client.put_object(
        Bucket=target.bucket, Key=key, Body=body, ContentType="application/json", **condition,
    ), expected=(*_PRECONDITION, *_UNSUPPORTED, *_ABSENT, "ConditionalRequestConflict"))
    return str(answer["ETag"])


def check_conditional_writes(client: Any, target: RemoteTarget) -> None:
    """Refuse a store that does not honour ``If-None-Match: *`` (see the module's notes)."""
    key = f"{target.prefix}/{LEASE_NAME}-probe-{secrets.token_hex(8)}"
    where = target.display(key)
    refused = ("the store does not honour conditional writes (If-None-Match: *): {}; two pools could both "
               "take the lease and write one prefix, so ltxpool will not ship there")
    # A first PUT that fails leaves nothing to delete, or a stray probe object that no listing of
    # a level sees: harmless. Deleting it anyway would, at a store that does not answer, spend
    # another minute of retries before the failure is reported.
    try:
        _put(client, target, key, b"probe", IfNoneMatch="*")
    except ClientError as exc:
        raise ConditionalWritesUnsupported(where, "probe conditional writes", None,
                                           refused.format(f"it answered {error_code(exc)}")) from exc
    try:
        try:
            _put(client, target, key, b"probe again", IfNoneMatch="*")
        except ClientError as exc:
            if error_code(exc) in _PRECONDITION:
                return  # refused to overwrite: the condition holds
            raise ConditionalWritesUnsupported(where, "probe conditional writes", None,
                                               refused.format(f"it answered {error_code(exc)}")) from exc
        raise ConditionalWritesUnsupported(where, "probe conditional writes", None, refused.format(
            "a second PUT with If-None-Match: * replaced an existing object instead of failing with 412"))
    finally:
        with contextlib.suppress(RemoteRequestError):
            call(where, "delete probe", lambda: client.delete_object(Bucket=target.bucket, Key=key), attempts=3)


def _read(client: Any, target: RemoteTarget, key: str) -> tuple[dict[str, Any], str] | None:
    """The lease's body and ETag; None if there is none."""
    def get() -> tuple[bytes, str]:
        answer = client.get_object(Bucket=target.bucket, Key=key)
        return answer["Body"].read(), str(answer["ETag"])
    try:
        raw, etag = call(target.display(key), "read lease", get, expected=_ABSENT)
    except ClientError:
        return None
    try:
        body = json.loads(raw)
        if not isinstance(body, dict):
            raise ValueError("not an object")
    except ValueError:
        body = {"owner": f"<unreadable lease: {raw[:60]!r}>"}
    return body, etag


def acquire_lease(
    client: Any, target: RemoteTarget, *, ttl: float = DEFAULT_TTL, owner: Owner | None = None,
    clock: Callable[[], float] = time.time, probe: bool = True,
) -> Lease:
    """Take the prefix's lease for ``ttl`` seconds, or raise :class:`LeaseHeld` naming its holder."""
    owner = owner or Owner.here()
    if probe:
        check_conditional_writes(client, target)
    key = lease_key(target)
    where = target.display(key)
    for _ in range(3):
        now = clock()
        try:
            etag = _put(client, target, key, _body(owner, now, ttl), IfNoneMatch="*")
            return Lease(target, owner, etag, now + ttl)
        except ClientError as exc:
            if error_code(exc) not in (*_PRECONDITION, "ConditionalRequestConflict"):
                raise ConditionalWritesUnsupported(where, "acquire lease", None,
                                                   f"the store refused a conditional write: {error_code(exc)}") from exc
        found = _read(client, target, key)
        if found is None:
            continue  # released in between: try again
        body, etag = found
        holder = str(body.get("owner", "<unknown>"))
        expires = body.get("expires")
        if holder != owner.id and isinstance(expires, (int, float)) and expires > now:
            until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires))
            raise LeaseHeld(where, "acquire lease", None,
                            f"held by {holder} (host {body.get('host')}, pid {body.get('pid')}) until {until}: "
                            "another pool ships into this prefix", holder=holder)
        if holder != owner.id and not isinstance(expires, (int, float)):
            raise LeaseHeld(where, "acquire lease", None, f"held by {holder}, with no expiry: remove "
                            f"{where} by hand only if no pool ships here", holder=holder)
        # Ours (a retried create whose answer was lost, or a restart), or expired: take it
        # over -- only if it is still the very object read.
        try:
            etag = _put(client, target, key, _body(owner, now, ttl), IfMatch=etag)
            return Lease(target, owner, etag, now + ttl)
        except ClientError as exc:
            if error_code(exc) not in (*_PRECONDITION, *_ABSENT, "ConditionalRequestConflict"):
                raise
    raise LeaseHeld(where, "acquire lease", None, "the lease kept changing hands while it was taken", holder="")


def renew_lease(client: Any, lease: Lease, *, ttl: float = DEFAULT_TTL,
                clock: Callable[[], float] = time.time) -> Lease:
    """Extend our lease; :class:`LeaseLost` if it is no longer the object we last wrote."""
    key = lease_key(lease.target)
    now = clock()
    try:
        etag = _put(client, lease.target, key, _body(lease.owner, now, ttl), IfMatch=lease.etag)
    except ClientError as exc:
        found = _read(client, lease.target, key)
        holder = "nobody" if found is None else str(found[0].get("owner"))
        raise LeaseLost(lease.target.display(key), "renew lease", None,
                        f"the lease is no longer ours ({error_code(exc)}): now held by {holder}") from exc
    return Lease(lease.target, lease.owner, etag, now + ttl)


def release_lease(client: Any, lease: Lease) -> bool:
    """Delete our lease if it is still ours; False if it was not (nothing to release)."""
    key = lease_key(lease.target)
    try:
        call(lease.target.display(key), "release lease", lambda: client.delete_object(
            Bucket=lease.target.bucket, Key=key, IfMatch=lease.etag), expected=(*_PRECONDITION, *_ABSENT))
    except ClientError:
        return False
    return True
