"""The shipper: the pool's one child that copies durable LTX files into the buckets (#16).

``shipper_main`` looks after every replica whose ``[[databases]]`` entry has a
``[databases.remote]`` (``remote_replicas``, found again every ``janitor_interval``).
For each, in turn, every ``[shipper] interval``:

* at first contact it takes the prefix's lease (``acquire_lease``, after probing the
  store's conditional writes). Another pool's lease (:class:`LeaseHeld`) or a store
  that ignores ``If-None-Match`` (:class:`ConditionalWritesUnsupported`) is one clear
  error naming the prefix and the holder, reported and backed off; the pool goes on.
  The owner id is the pool's (host, supervisor pid, a token drawn once by the
  supervisor), so a restarted shipper takes its own lease back at once, while a
  second pool, with another token, is refused. The lease is renewed at half its TTL
  (checked before every upload, so a long backlog does not outlast it) and released
  when the shipper stops.
* what the bucket holds is listed at first contact, after any error, and every
  ``relist_interval``; in between the shipper trusts its own record of it (it holds
  the lease: nobody else writes there), so an idle replica costs one ``lstat`` per
  level directory and no request: when no level directory's (device, inode, mtime,
  ctime) moved since its last complete pass, nothing is there to ship. A stamp taken
  within a second of its directory's change is not trusted (the janitor's memory
  explains why: ``ltxpool.replica.janitor_memory``).
* ``ship_replica`` uploads what is durable locally and absent remotely: snapshots
  first, each level oldest first, complete objects only.
* with each full listing, remote retention (``prune_remote``): the bucket deletes what
  local retention deleted and its own restore chain does not need.
* the files the bucket then holds go into ``<replica>/.ltxpool-remote/shipped``
  (``ltxpool.replica.shipped``), fsynced, which the janitor's retention obeys: a file
  not in it is never deleted locally.

A failure of one replica is logged, reported (``ShipFailed``) and retried after 1, 2,
4 ... seconds up to ``backoff_max``; the refusal of a lease is logged once per new
reason, not every retry.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ltxpool.display import escape, one_line
from ltxpool.errors import LtxpoolError
from ltxpool.pool.child import ChildLink
from ltxpool.pool.config import PoolConfig
from ltxpool.pool.errors import ShipperStopping
from ltxpool.pool.events import ShipFailed, Shipped
from ltxpool.pool.replicas import remote_replicas
from ltxpool.remote import (
    ConditionalWritesUnsupported,
    Lease,
    LeaseHeld,
    LeaseLost,
    Owner,
    RemoteError,
    RemoteTarget,
    acquire_lease,
    list_all,
    make_client,
    object_key,
    prune_remote,
    release_lease,
    renew_lease,
    ship_replica,
)
from ltxpool.replica.layout import LEVELS, Replica
from ltxpool.replica.shipped import write_shipped

__all__ = ["shipper_main", "pool_owner"]

log = logging.getLogger("ltxpool.shipper")

#: A level directory changed within this many seconds of its stamp may change again unseen.
_RACY = 1.0

_Stamp = tuple[tuple[int, int, int, int] | None, ...]


def pool_owner(parent: int, token: str) -> Owner:
    """The lease owner of every shipper of one pool: its restarts take their own lease back."""
    return Owner(socket.gethostname(), parent, token)


def _stamps(replica: Replica, now: float) -> _Stamp | None:
    """Each level directory's (device, inode, mtime, ctime); None if one cannot prove "no change"."""
    keys: list[tuple[int, int, int, int] | None] = []
    for level in LEVELS:
        try:
            st = os.stat(replica.level_dir(level), follow_symlinks=False)
        except FileNotFoundError:
            keys.append(None)
            continue
        except OSError:
            return None
        if now - max(st.st_mtime, st.st_ctime) < _RACY:
            return None
        keys.append((st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns))
    return tuple(keys)


@dataclass
class _Prefix:
    """One replica and its remote, as the shipper knows them."""

    root: str
    target: RemoteTarget
    lease: Lease | None = None
    #: What the bucket holds under the prefix (key -> size); None: list it first.
    held: dict[str, int] | None = None
    listed_at: float = 0.0
    #: The level directories' stamps at the start of the last complete pass.
    stamps: _Stamp | None = None
    recorded: set[tuple[int, int, int, int]] | None = None
    failures: int = 0
    not_before: float = 0.0
    refusal: str = ""


class _Clients:
    """One boto3 client per store (endpoint, region, addressing), made in this process.

    Each client tells the supervisor the shipper is alive before every HTTP attempt
    (``on_attempt``): a step against a store whose packets are dropped goes on retrying
    for a minute or more (``ltxpool.remote.retry``), longer than a short ``hang_timeout``,
    and a shipper killed as hung there would never report why it cannot ship.
    """

    def __init__(self, on_attempt: Callable[[], None]) -> None:
        self._on_attempt = on_attempt
        self._made: dict[tuple[str | None, str, bool], Any] = {}

    def of(self, target: RemoteTarget) -> Any:
        key = (target.endpoint, target.region, target.force_path_style)
        if key not in self._made:
            self._made[key] = make_client(target, on_attempt=self._on_attempt)
        return self._made[key]


class _Shipper:
    def __init__(self, link: ChildLink, config: PoolConfig, owner: Owner) -> None:
        self.link = link
        self.config = config
        self.settings = config.shipper
        self.owner = owner
        self.clients = _Clients(link.still_busy)
        self.prefixes: dict[str, _Prefix] = {}

    def refresh(self) -> None:
        """Take in the replicas that have a remote now; let go of those that no longer do."""
        found = remote_replicas(self.config)
        for root in list(self.prefixes):
            if root not in found or found[root] != self.prefixes[root].target:
                self._release(self.prefixes.pop(root))
        for root, target in found.items():
            if root not in self.prefixes:
                self.prefixes[root] = _Prefix(root, target)

    def _release(self, prefix: _Prefix) -> None:
        if prefix.lease is None:
            return
        with contextlib.suppress(RemoteError):
            release_lease(self.clients.of(prefix.target), prefix.lease)
        prefix.lease = None

    def release_all(self) -> None:
        for prefix in self.prefixes.values():
            self._release(prefix)

    def _lease(self, prefix: _Prefix, client: Any, now: float) -> None:
        ttl = self.settings.lease_ttl
        if prefix.lease is None:
            prefix.lease = acquire_lease(client, prefix.target, ttl=ttl, owner=self.owner)
            prefix.held = None  # a new lease: what the bucket holds is listed again
            log.info("%s: shipping to %s (lease taken)", escape(prefix.root), prefix.target.url)
        elif prefix.lease.expires - now < ttl / 2:
            prefix.lease = renew_lease(client, prefix.lease, ttl=ttl)

    def _prune(self, prefix: _Prefix, client: Any, held: set[tuple[int, int, int, int]], now: float) -> None:
        """Remote retention, with each full listing (rarely): delete what local retention deleted
        and the bucket's own restore chain does not need (``prune_remote``)."""
        local = _local(held)
        deleted = prune_remote(client, prefix.target, self.config.janitor.retention, now,
                               keep=lambda f: (f.level, f.min_txid, f.max_txid) in local)
        for key in deleted:
            assert prefix.held is not None
            prefix.held.pop(key, None)
        if deleted:
            log.info("%s: remote retention deleted %d objects from %s", escape(prefix.root), len(deleted),
                     prefix.target.url)

    def visit(self, prefix: _Prefix, now: float) -> None:
        """One pass over one replica; failures are logged, reported and backed off."""
        self.link.busy(f"shipping {prefix.root}", replica=prefix.root)
        try:
            self._ship(prefix, now)
        except ShipperStopping:
            prefix.held = None
        except (LeaseHeld, ConditionalWritesUnsupported) as exc:
            self._failed(prefix, exc, f"refusing to ship to {prefix.target.url}: {exc}")
        except LeaseLost as exc:
            prefix.lease = None
            self._failed(prefix, exc, f"lost the lease of {prefix.target.url}, stopped shipping there: {exc}")
        except (LtxpoolError, OSError) as exc:
            self._failed(prefix, exc, f"shipping to {prefix.target.url} failed: {exc}")

    def _failed(self, prefix: _Prefix, exc: BaseException, line: str) -> None:
        prefix.held = None  # after an error the bucket is listed again
        prefix.stamps = None
        delay = min(2.0 ** prefix.failures, self.settings.backoff_max)
        prefix.failures += 1
        prefix.not_before = time.monotonic() + delay
        line = one_line(line)
        if line != prefix.refusal:
            log.error("%s: %s (retry in %.0f s)", escape(prefix.root), line, delay)
            prefix.refusal = line
        self.link.send(ShipFailed(prefix.root, exc))

    def _ship(self, prefix: _Prefix, now: float) -> None:
        client = self.clients.of(prefix.target)
        self._lease(prefix, client, now)
        replica = Replica(prefix.root)
        stamps = _stamps(replica, now)
        if prefix.held is not None and now - prefix.listed_at > self.settings.relist_interval:
            prefix.held = None
        if prefix.held is not None and stamps is not None and stamps == prefix.stamps:
            return  # nothing changed locally since a complete pass: nothing to ship
        relisted = prefix.held is None
        if prefix.held is None:
            prefix.held = {object_key(prefix.target, f.level, f.min_txid, f.max_txid): f.size
                           for listing in list_all(client, prefix.target).values() for f in listing.files}
            prefix.listed_at = now

        def before_upload(key: str) -> None:
            # A long backlog outlasts the lease's TTL and the hang timeout: renew and report between
            # files; and a stop does not wait for the backlog (what is uploaded stays uploaded).
            if self.link.stopping:
                raise ShipperStopping
            self._lease(prefix, client, time.time())
            self.link.busy(f"shipping {prefix.target.display(key)}", replica=prefix.root)

        report = ship_replica(replica, client, prefix.target, settings=self.settings.ship, held=prefix.held,
                              before_upload=before_upload)
        held = set(report.held_local)
        if held != prefix.recorded:
            write_shipped(replica, held)
            prefix.recorded = held
        if relisted and not report.conflicts:
            self._prune(prefix, client, held, now)
        pending = len(report.corrupt) + len(report.conflicts)
        prefix.stamps = stamps
        prefix.failures = 0
        if prefix.refusal:
            log.info("%s: shipping to %s again", escape(prefix.root), prefix.target.url)
            prefix.refusal = ""
        lag = max(now - report.oldest_missing, 0.0) if report.oldest_missing is not None else 0.0
        if report.uploaded:
            log.debug("%s: shipped %d files (%d bytes) to %s", escape(prefix.root), len(report.uploaded),
                     report.bytes_uploaded, prefix.target.url)
        for path, reason in report.conflicts:
            log.error("%s: not shipped, the bucket holds another object: %s: %s", escape(prefix.root),
                      escape(path), reason)
        self.link.send(Shipped(prefix.root, len(report.uploaded), report.bytes_uploaded, lag, pending))


def _local(held: set[tuple[int, int, int, int]]) -> set[tuple[int, int, int]]:
    return {(level, low, high) for level, low, high, _ in held}


def shipper_main(link: ChildLink, config: PoolConfig, token: str) -> None:
    """Ship every replica with a remote every ``[shipper] interval`` until asked to stop."""
    shipper = _Shipper(link, config, pool_owner(link.parent, token))
    refreshed = -float("inf")
    try:
        while not link.stopping:
            started = time.monotonic()
            if started - refreshed >= config.janitor_interval:
                link.busy("looking for replicas with a remote")
                shipper.refresh()
                refreshed = started
            for prefix in list(shipper.prefixes.values()):
                if link.stopping:
                    break
                if prefix.not_before > time.monotonic():
                    continue
                shipper.visit(prefix, time.time())
            link.sleep(config.shipper.interval - (time.monotonic() - started))
    finally:
        shipper.release_all()
