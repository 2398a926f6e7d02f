"""Off-host copies on S3-compatible object storage, in Litestream 0.5's S3 layout (#16).

``<prefix>/<level:04x>/<min:016x>-<max:016x>.ltx``: what ``litestream restore
s3://bucket/prefix`` reads, and what ``litestream replicate`` to an S3 replica
writes, so either tool restores what the other shipped.

Modules, one job each: ``target`` (bucket, prefix, endpoint, region, path style;
parsed from a config table or a Litestream-style URL), ``client`` (the boto3 client:
retries, timeouts, addressing; credentials from boto3's default chain only),
``retry`` (whole steps retried while the failure passes), ``layout`` (object keys,
listing a level), ``source`` (objects as seekable, bounded-memory streams for the
decoder), ``upload`` (shipping a replica: complete objects only, once each),
``lease`` (one writer per prefix, by conditional writes), ``retention`` (the
bucket follows the local retention rules), ``restore`` (restore and
verify from the bucket through the replica layer's planner and checks).

Layer: imports ``errors``, ``display``, ``locks``, ``ltx`` and ``replica``; the pool
and the command line use it.
"""

from __future__ import annotations

from ltxpool.remote.client import LONGEST_SILENCE, make_client
from ltxpool.remote.errors import (
    ConditionalWritesUnsupported,
    LeaseHeld,
    LeaseLost,
    RemoteConfigError,
    RemoteConflictError,
    RemoteError,
    RemoteRequestError,
)
from ltxpool.remote.layout import LEASE_NAME, level_prefix, list_all, list_level, object_key, parse_key
from ltxpool.remote.lease import (
    DEFAULT_TTL,
    Lease,
    Owner,
    acquire_lease,
    check_conditional_writes,
    lease_key,
    release_lease,
    renew_lease,
)
from ltxpool.remote.restore import FileVerdict, check_remote_chains, remote_listings, restore_remote, verify_remote
from ltxpool.remote.retention import prune_remote
from ltxpool.remote.source import ObjectReader, RemoteSource
from ltxpool.remote.target import RemoteTarget, is_remote_url, parse_remote, parse_remote_url
from ltxpool.remote.upload import (
    MULTIPART_THRESHOLD,
    PART_SIZE,
    ShipReport,
    ShipSettings,
    abort_stale_uploads,
    ship_file,
    ship_replica,
)

__all__ = [
    "DEFAULT_TTL",
    "LEASE_NAME",
    "LONGEST_SILENCE",
    "MULTIPART_THRESHOLD",
    "PART_SIZE",
    "ConditionalWritesUnsupported",
    "FileVerdict",
    "Lease",
    "LeaseHeld",
    "LeaseLost",
    "ObjectReader",
    "Owner",
    "RemoteConfigError",
    "RemoteConflictError",
    "RemoteError",
    "RemoteRequestError",
    "RemoteSource",
    "RemoteTarget",
    "ShipReport",
    "ShipSettings",
    "abort_stale_uploads",
    "acquire_lease",
    "check_conditional_writes",
    "check_remote_chains",
    "is_remote_url",
    "lease_key",
    "level_prefix",
    "list_all",
    "list_level",
    "make_client",
    "object_key",
    "parse_key",
    "parse_remote",
    "parse_remote_url",
    "prune_remote",
    "release_lease",
    "remote_listings",
    "renew_lease",
    "restore_remote",
    "ship_file",
    "ship_replica",
    "verify_remote",
]
