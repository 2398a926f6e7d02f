"""Where an off-host copy lives: a bucket and a prefix on an S3-compatible store.

Two spellings, one :class:`RemoteTarget`:

* the pool's config table (``parse_remote``)::

      url = "s3://bucket/prefix"
      endpoint = "http://127.0.0.1:9000"   # optional: AWS when absent
      region = "us-east-1"                 # optional
      force_path_style = true              # optional: true with an endpoint, else false

* the URL ``litestream restore`` takes (``parse_remote_url``), for the command line:
  ``s3://bucket/prefix?endpoint=host:port&region=r&forcePathStyle=true``. As in
  Litestream 0.5.17 (``s3/replica_client.go`` NewReplicaClientFromURL): an endpoint
  without a scheme is ``http://`` when local, else ``https://``; a custom endpoint
  means path-style addressing unless ``forcePathStyle=false``; the prefix is the
  URL's path, cleaned, without its leading slash (``replica_url.go``
  ParseReplicaURLWithQuery).

Credentials are never part of a target: boto3's default chain finds them (the
environment, the shared credentials file, an instance role), so no config file, URL,
log line or error message holds one. A config key that looks like one is refused.
"""

from __future__ import annotations

import ipaddress
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ltxpool.remote.errors import RemoteConfigError

__all__ = ["DEFAULT_REGION", "RemoteTarget", "is_remote_url", "parse_remote", "parse_remote_url"]

DEFAULT_REGION = "us-east-1"
_KEYS = ("url", "endpoint", "region", "force_path_style")
_CREDENTIAL_KEYS = ("access_key_id", "secret_access_key", "access-key-id", "secret-access-key", "session_token")
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


@dataclass(frozen=True)
class RemoteTarget:
    """A bucket, the prefix inside it (no leading or trailing slash), and how to reach it."""

    bucket: str
    prefix: str
    endpoint: str | None = None
    region: str = DEFAULT_REGION
    force_path_style: bool = False

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def display(self, key: str) -> str:
        """``s3://bucket/key``: how messages name an object."""
        return f"s3://{self.bucket}/{key}"


def is_remote_url(text: str) -> bool:
    return text.startswith("s3://")


def _is_local(host: str) -> bool:
    """Litestream's IsLocalEndpoint, near enough: loopback, private addresses, .local names."""
    name = urlsplit("//" + host).hostname or ""
    if name == "localhost" or name.endswith((".local", ".localhost")):
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    return address.is_loopback or address.is_private


def _endpoint(source: str, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise RemoteConfigError(source, key, None, f"must be a URL such as http://127.0.0.1:9000, not {value!r}")
    if "://" not in value:
        value = ("http://" if _is_local(value) else "https://") + value
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RemoteConfigError(source, key, None, "must be an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise RemoteConfigError(source, key, None, "must not hold credentials (use the environment, "
                                "the shared credentials file or an instance role)")
    if parts.query or parts.fragment:
        raise RemoteConfigError(source, key, None, "must not have a query or fragment")
    return str(value).rstrip("/")


def _bucket_and_prefix(source: str, key: str, url: Any, *, query_allowed: bool) -> tuple[str, str, str]:
    if not isinstance(url, str) or not is_remote_url(url):
        raise RemoteConfigError(source, key, None, "must be an s3://bucket/prefix URL")
    parts = urlsplit(url)
    if parts.query and not query_allowed:
        raise RemoteConfigError(source, key, None, "must have no query: give endpoint, region and "
                                "force_path_style as keys of their own")
    if parts.username is not None or parts.password is not None:
        raise RemoteConfigError(source, key, None, "must not hold credentials")
    bucket = parts.hostname or ""
    if not bucket or bucket != parts.netloc:
        raise RemoteConfigError(source, key, None, "names no bucket (or a bucket with a port)")
    segments = [s for s in parts.path.split("/") if s]
    if ".." in segments:
        raise RemoteConfigError(source, key, None, "must not climb with '..'")
    prefix = posixpath.normpath("/".join(segments)) if segments else ""
    if not prefix or prefix == ".":
        # Litestream would write to "./0000/..." there; a prefix keeps one database's copy apart.
        raise RemoteConfigError(source, key, None, f"needs a prefix after the bucket: s3://{bucket}/<prefix>")
    return bucket, prefix, parts.query


def parse_remote(table: Mapping[str, Any], key: str, source: str = "") -> RemoteTarget:
    """The target a config table describes; ``key`` is the table's dotted name (for errors).

    Raises :class:`RemoteConfigError` with ``step`` = the dotted key at fault and
    ``path`` = ``source`` (the config file), as the pool's ConfigError does.
    """
    if not isinstance(table, Mapping):
        raise RemoteConfigError(source, key, None, f"must be a table, not {type(table).__name__}")
    for name in table:
        if name in _CREDENTIAL_KEYS:
            raise RemoteConfigError(source, f"{key}.{name}", None, "credentials are never read from the config: "
                                    "use the environment, the shared credentials file or an instance role")
        if name not in _KEYS:
            raise RemoteConfigError(source, f"{key}.{name}", None, "unknown key")
    if "url" not in table:
        raise RemoteConfigError(source, f"{key}.url", None, "is required (s3://bucket/prefix)")
    bucket, prefix, _ = _bucket_and_prefix(source, f"{key}.url", table["url"], query_allowed=False)
    endpoint = None if "endpoint" not in table else _endpoint(source, f"{key}.endpoint", table["endpoint"])
    region = table.get("region", DEFAULT_REGION)
    if not isinstance(region, str) or not region:
        raise RemoteConfigError(source, f"{key}.region", None, f"must be a region name, not {region!r}")
    path_style = table.get("force_path_style", endpoint is not None)
    if not isinstance(path_style, bool):
        raise RemoteConfigError(source, f"{key}.force_path_style", None, f"must be true or false, not {path_style!r}")
    return RemoteTarget(bucket, prefix, endpoint, region, path_style)


def _flag(source: str, name: str, text: str) -> bool:
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise RemoteConfigError(source, name, None, f"must be true or false, not {text!r}")


def parse_remote_url(url: str) -> RemoteTarget:
    """The target of a Litestream-style ``s3://bucket/prefix?endpoint=...&region=...&forcePathStyle=...``."""
    parts = urlsplit(url)
    # Messages name the URL without its query or anything before an @.
    safe = f"{parts.scheme}://{parts.hostname or ''}{parts.path}"
    bucket, prefix, query = _bucket_and_prefix(safe, "url", url, query_allowed=True)
    values = {name: found[-1] for name, found in parse_qs(query, keep_blank_values=True).items()}
    unknown = sorted(set(values) - {"endpoint", "region", "forcePathStyle", "force-path-style"})
    if unknown:
        raise RemoteConfigError(target_display(bucket, prefix), unknown[0], None,
                                "unknown URL parameter (known: endpoint, region, forcePathStyle)")
    where = target_display(bucket, prefix)
    endpoint = _endpoint(where, "endpoint", values["endpoint"]) if values.get("endpoint") else None
    region = values.get("region") or DEFAULT_REGION
    style = values.get("forcePathStyle", values.get("force-path-style"))
    path_style = endpoint is not None if style is None else _flag(where, "forcePathStyle", style)
    return RemoteTarget(bucket, prefix, endpoint, region, path_style)


def target_display(bucket: str, prefix: str) -> str:
    return f"s3://{bucket}/{prefix}"
