"""The pool's configuration: one TOML file, command-line flags on top, all checked first.

A supervisor runs for months, so a mistake in its configuration must stop it at the
start, not at 3 a.m. when the janitor first reads a misspelt key. Every key is
checked before anything starts: an unknown key, a wrong type or a value out of
range is refused with its dotted name and the reason (``ConfigError``, ``step`` =
the key). The same checks run on SIGHUP, where a bad file is refused and the pool
keeps its current configuration.

Example (every key optional; replicas, here or on the command line, or databases needed)::

    replicas = ["/var/lib/ltx/app", "/var/lib/ltx/billing"]   # compacted only; relative: to this file
    workers = 2
    log_format = "text"            # or "json"
    log_level = "info"
    allow_network_fs = false
    tenant_owners = []             # users who may own a replica root besides root and the pool's user

    [[databases]]                  # replicated and compacted by the pool (issue 15)
    path = "/srv/app/app.db"
    replica = "/srv/ltx/app"
    interval = 1.0                 # seconds between steps while it changes

    [[databases]]                  # every database under dir: one replica each
    dir = "/srv/tenants"
    pattern = "*.db"
    recursive = true
    replica_root = "/srv/ltx/tenants"   # /srv/tenants/a/b.db -> /srv/ltx/tenants/a/b.db/

    [databases.remote]             # optional, for the entry just above: shipped off-host (#16)
    url = "s3://bucket/tenants"    # /srv/tenants/a/b.db -> s3://bucket/tenants/a/b.db/0000/...
    endpoint = "http://127.0.0.1:9000"   # optional (AWS when absent); region, force_path_style too
                                   # credentials: environment, shared credentials file, instance role

    [shipper]                      # the pool's one shipper process (only with a remote)
    interval = 1.0                 # how often it looks for new durable files
    relist_interval = 3600         # a full listing of each prefix this often (and at start, after errors)
    lease_ttl = 120                # the prefix's lease; renewed at half of it
    backoff_max = 300              # a failing replica is retried after 1, 2, 4 ... up to this many seconds

    [discovery]
    rescan_interval = 300          # full scan of the entries, in case a change event was missed

    [compaction]
    intervals = { 1 = 30, 2 = 300, 3 = 3600 }   # seconds between compactions per level
    snapshot_interval = 86400
    poll_interval = 1.0            # how often workers look for new level-0 files
    lock_timeout = 30              # longest wait for a directory lock; keep it under hang_timeout

    [retention]
    levels = { 0 = 300, 1 = 86400, 2 = 86400, 3 = 86400 }
    snapshots = 86400

    [janitor]
    interval = 60
    foreign_temp_age = 3600
    cleaning_timeout = 1.0

    [supervisor]
    grace = 10                     # SIGTERM -> in-flight work may finish -> SIGKILL
    hang_timeout = 900             # a child silent this long on one item is killed
    restart_backoff = 0.5          # first restart delay; doubles per crash
    restart_backoff_max = 30
    crash_loop_restarts = 5        # more crashes than this within the window: give up
    crash_loop_window = 60
    isolate_replicas = true        # false (tests only): a death while on one replica counts as a crash

    [metrics]
    port = 9464                    # absent: no metrics server
    address = "127.0.0.1"
    per_database = false           # true: one series per database (lag, TXID, failing); else totals only
"""

from __future__ import annotations

import dataclasses
import errno
import fnmatch
import math
import os
import pwd
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ltxpool.discovery.entries import DEFAULT_INTERVAL, DEFAULT_PATTERN, DatabaseDir, DatabaseEntry, DatabaseFile
from ltxpool.pool.errors import ConfigError
from ltxpool.pool.watcher import RestartPolicy
from ltxpool.remote import (
    DEFAULT_TTL,
    LONGEST_SILENCE,
    MULTIPART_THRESHOLD,
    PART_SIZE,
    RemoteConfigError,
    RemoteTarget,
    ShipSettings,
    parse_remote,
)
from ltxpool.replica.compactor import CompactionSettings
from ltxpool.replica.errors import UnsafeRootError
from ltxpool.replica.janitor import JanitorSettings
from ltxpool.replica.layout import COMPACTION_LEVELS
from ltxpool.replica.retention import RetentionPolicy
from ltxpool.replica.roots import check_root

__all__ = [
    "PoolConfig",
    "ShipperSettings",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "load_config",
    "parse_config",
    "with_overrides",
    "setting_warnings",
    "check_replicas",
    "check_databases",
]

LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")
_RETENTION_LEVELS = (0, *COMPACTION_LEVELS)


@dataclass(frozen=True)
class PoolConfig:
    """Everything the supervisor and its children need; children get a copy at fork."""

    replicas: tuple[str, ...] = ()
    #: ``[[databases]]``: what the pool replicates (and then compacts, like ``replicas``).
    databases: tuple[DatabaseEntry, ...] = ()
    #: Seconds between full scans of the entries, the safety net for missed change events.
    rescan_interval: float = 300.0
    #: False (tests only): no change notification, only the rescans -- to show what it does.
    notify: bool = True
    workers: int = 2
    log_format: str = "text"
    log_level: str = "info"
    allow_network_fs: bool = False
    tenant_owners: tuple[int, ...] = ()
    compaction: CompactionSettings = field(default_factory=CompactionSettings)
    poll_interval: float = 1.0
    #: How long a worker waits for a directory lock before it names the holder and backs off.
    lock_timeout: float = 30.0
    janitor: JanitorSettings = field(default_factory=JanitorSettings)
    janitor_interval: float = 60.0
    grace: float = 10.0
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    metrics_port: int | None = None
    metrics_address: str = "127.0.0.1"
    #: One Prometheus series per database and metric (thousands of series); else only the totals by state.
    metrics_per_database: bool = False
    #: Diagnostic: read the mount table from this file instead of /proc/self/mountinfo.
    mount_table: str | None = None
    shipper: ShipperSettings = field(default_factory=lambda: ShipperSettings())

    @property
    def ships_off_host(self) -> bool:
        """Some entry has a ``[databases.remote]``: the pool runs a shipper."""
        return any(entry.remote is not None for entry in self.databases)


@dataclass(frozen=True)
class ShipperSettings:
    """``[shipper]``: how the pool's shipper works through the replicas that have a remote."""

    interval: float = 1.0
    relist_interval: float = 3600.0
    lease_ttl: float = DEFAULT_TTL
    backoff_max: float = 300.0
    #: Test-only knobs (``multipart_threshold``, ``part_size``): S3's limits still apply.
    ship: ShipSettings = field(default_factory=ShipSettings)


class _Reader:
    """Takes keys out of one TOML table, checking each; whatever is left is unknown."""

    def __init__(self, source: str, table: Mapping[str, Any], prefix: str = "") -> None:
        self.source = source
        self.table = dict(table)
        self.prefix = prefix

    def fail(self, key: str, reason: str) -> ConfigError:
        return ConfigError(self.source, f"{self.prefix}{key}", None, reason)

    def take(self, key: str, check: Callable[[str, Any], Any], default: Any) -> Any:
        if key not in self.table:
            return default
        return check(f"{self.prefix}{key}", self.table.pop(key))

    def section(self, key: str) -> _Reader:
        value = self.table.pop(key, {})
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a table, not {type(value).__name__}")
        return _Reader(self.source, value, f"{self.prefix}{key}.")

    def done(self) -> None:
        if self.table:
            raise self.fail(next(iter(self.table)), "unknown key")


def _number(minimum: float, *, strictly: bool = False) -> Callable[[str, Any], float]:
    def check(key: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError("", key, None, f"must be a number of seconds, not {value!r}")
        if value < minimum or (strictly and value == minimum):
            raise ConfigError("", key, None, f"must be {'more than' if strictly else 'at least'} {minimum:g}, not {value!r}")
        return float(value)
    return check


def _integer(minimum: int, maximum: int | None = None) -> Callable[[str, Any], int]:
    def check(key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError("", key, None, f"must be an integer, not {value!r}")
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"from {minimum} to {maximum}" if maximum is not None else f"at least {minimum}"
            raise ConfigError("", key, None, f"must be {bound}, not {value}")
        return value
    return check


def _choice(choices: tuple[str, ...]) -> Callable[[str, Any], str]:
    def check(key: str, value: Any) -> str:
        if value not in choices:
            raise ConfigError("", key, None, f"must be one of {', '.join(choices)}, not {value!r}")
        return str(value)
    return check


def _boolean(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError("", key, None, f"must be true or false, not {value!r}")
    return value


def _string(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError("", key, None, f"must be a non-empty string, not {value!r}")
    return value


def _per_level(levels: tuple[int, ...], seconds: Callable[[str, Any], float]) -> Callable[[str, Any], dict[int, float]]:
    def check(key: str, value: Any) -> dict[int, float]:
        if not isinstance(value, dict):
            raise ConfigError("", key, None, f"must be a table of level = seconds, not {value!r}")
        result = {}
        for name, item in value.items():
            if not name.isdigit() or int(name) not in levels:
                raise ConfigError("", f"{key}.{name}", None, f"unknown level (levels are {', '.join(map(str, levels))})")
            result[int(name)] = seconds(f"{key}.{name}", item)
        return result
    return check


def _user_list(key: str, value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(isinstance(name, str) and name for name in value):
        raise ConfigError("", key, None, f"must be a list of user names, not {value!r}")
    uids = []
    for name in value:
        try:
            uids.append(pwd.getpwnam(name).pw_uid)
        except KeyError:
            raise ConfigError("", key, None, f"no such user: {name!r}") from None
    return tuple(uids)


def _replica_list(base: str) -> Callable[[str, Any], tuple[str, ...]]:
    def check(key: str, value: Any) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
            raise ConfigError("", key, None, f"must be a list of directory paths, not {value!r}")
        return tuple(os.path.join(base, item) for item in value)
    return check


def _database_entries(base: str) -> Callable[[str, Any], tuple[DatabaseEntry, ...]]:
    """``[[databases]]``: each entry a table with ``path`` + ``replica``, or ``dir`` + ``replica_root``."""
    def check(key: str, value: Any) -> tuple[DatabaseEntry, ...]:
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            raise ConfigError("", key, None, "must be an array of tables ([[databases]])")
        return tuple(_database_entry(_Reader("", item, f"{key}[{index}]."), base) for index, item in enumerate(value))
    return check


def _database_entry(entry: _Reader, base: str) -> DatabaseEntry:
    def absolute(key: str, value: Any) -> str:
        return os.path.normpath(os.path.join(base, _string(key, value)))

    interval = entry.take("interval", _number(0.0, strictly=True), DEFAULT_INTERVAL)
    path = entry.take("path", absolute, None)
    directory = entry.take("dir", absolute, None)
    if (path is None) == (directory is None):
        raise entry.fail("path", "give either path (one database) or dir (every database in a folder)")
    made: DatabaseEntry
    if path is not None:
        replica = entry.take("replica", absolute, None)
        if replica is None:
            raise entry.fail("replica", "missing: the replica directory of this database")
        made = DatabaseFile(path, replica, interval)
    else:
        replica_root = entry.take("replica_root", absolute, None)
        if replica_root is None:
            raise entry.fail("replica_root", "missing: the folder the replicas of this dir's databases go under")
        pattern = entry.take("pattern", _string, DEFAULT_PATTERN)
        if "/" in pattern:
            raise entry.fail("pattern", f"matches file names, so it holds no '/': {pattern!r}")
        recursive = entry.take("recursive", _boolean, False)
        made = DatabaseDir(directory, replica_root, pattern, recursive, interval)
    if "remote" in entry.table:
        made = dataclasses.replace(made, remote=_remote(f"{entry.prefix}remote", entry.table.pop("remote")))
    entry.done()
    return made


def _remote(key: str, value: Any) -> RemoteTarget:
    """``[databases.remote]``, checked by the remote layer; its error becomes ours, same dotted key."""
    try:
        return parse_remote(value, key)
    except RemoteConfigError as exc:
        raise ConfigError("", exc.step, None, exc.reason) from None


def _ship_settings(threshold: int, part_size: int) -> ShipSettings:
    try:
        return ShipSettings(multipart_threshold=threshold, part_size=part_size)
    except ValueError as exc:
        raise ConfigError("", "shipper.part_size", None, str(exc)) from None


def _sourced(source: str, parse: Callable[[], PoolConfig]) -> PoolConfig:
    """Name the file in every error raised by a value check (checks only know the key)."""
    try:
        return parse()
    except ConfigError as exc:
        if exc.path:
            raise
        raise ConfigError(source, exc.step, None, exc.reason) from None


def parse_config(data: Mapping[str, Any], source: str = "<config>", base: str = ".") -> PoolConfig:
    """A checked :class:`PoolConfig` from a parsed TOML document; relative paths are under ``base``."""
    return _sourced(source, lambda: _parse(_Reader(source, data), base))


def _parse(top: _Reader, base: str) -> PoolConfig:
    defaults = PoolConfig()
    seconds, positive = _number(0.0), _number(0.0, strictly=True)
    replicas = top.take("replicas", _replica_list(base), defaults.replicas)
    databases = top.take("databases", _database_entries(base), defaults.databases)
    workers = top.take("workers", _integer(1, 256), defaults.workers)
    log_format = top.take("log_format", _choice(LOG_FORMATS), defaults.log_format)
    log_level = top.take("log_level", _choice(LOG_LEVELS), defaults.log_level)
    allow_network_fs = top.take("allow_network_fs", _boolean, defaults.allow_network_fs)
    tenant_owners = top.take("tenant_owners", _user_list, defaults.tenant_owners)

    discovery = top.section("discovery")
    rescan_interval = discovery.take("rescan_interval", positive, defaults.rescan_interval)
    notify = discovery.take("notify", _boolean, defaults.notify)
    discovery.done()

    compaction = top.section("compaction")
    intervals = {**defaults.compaction.intervals,
                 **compaction.take("intervals", _per_level(COMPACTION_LEVELS, seconds), {})}
    snapshot_interval = compaction.take("snapshot_interval", seconds, defaults.compaction.snapshot_interval)
    poll_interval = compaction.take("poll_interval", positive, defaults.poll_interval)
    lock_timeout = compaction.take("lock_timeout", seconds, defaults.lock_timeout)
    compaction.done()

    retention = top.section("retention")
    kept = {**defaults.janitor.retention.level_retention,
            **retention.take("levels", _per_level(_RETENTION_LEVELS, seconds), {})}
    snapshots = retention.take("snapshots", seconds, defaults.janitor.retention.snapshot_retention)
    retention.done()

    janitor = top.section("janitor")
    janitor_interval = janitor.take("interval", positive, defaults.janitor_interval)
    foreign_temp_age = janitor.take("foreign_temp_age", seconds, defaults.janitor.foreign_temp_age)
    cleaning_timeout = janitor.take("cleaning_timeout", seconds, defaults.janitor.cleaning_timeout)
    janitor.done()

    supervisor = top.section("supervisor")
    restart = defaults.restart
    grace = supervisor.take("grace", seconds, defaults.grace)
    restart = dataclasses.replace(
        restart,
        hang_timeout=supervisor.take("hang_timeout", positive, restart.hang_timeout),
        backoff=supervisor.take("restart_backoff", seconds, restart.backoff),
        backoff_max=supervisor.take("restart_backoff_max", seconds, restart.backoff_max),
        crash_loop_restarts=supervisor.take("crash_loop_restarts", _integer(0), restart.crash_loop_restarts),
        crash_loop_window=supervisor.take("crash_loop_window", positive, restart.crash_loop_window),
        isolate_replicas=supervisor.take("isolate_replicas", _boolean, restart.isolate_replicas),
    )
    supervisor.done()

    metrics = top.section("metrics")
    metrics_port = metrics.take("port", _integer(1, 65535), defaults.metrics_port)
    metrics_address = metrics.take("address", _string, defaults.metrics_address)
    metrics_per_database = metrics.take("per_database", _boolean, defaults.metrics_per_database)
    metrics.done()

    shipper = top.section("shipper")
    shipping = defaults.shipper
    shipping = ShipperSettings(
        interval=shipper.take("interval", positive, shipping.interval),
        relist_interval=shipper.take("relist_interval", positive, shipping.relist_interval),
        lease_ttl=shipper.take("lease_ttl", _number(5.0), shipping.lease_ttl),
        backoff_max=shipper.take("backoff_max", positive, shipping.backoff_max),
        ship=_ship_settings(shipper.take("multipart_threshold", _integer(1), MULTIPART_THRESHOLD),
                            shipper.take("part_size", _integer(1), PART_SIZE)),
    )
    shipper.done()
    top.done()

    return PoolConfig(
        replicas=replicas,
        databases=databases,
        rescan_interval=rescan_interval,
        notify=notify,
        workers=workers,
        log_format=log_format,
        log_level=log_level,
        allow_network_fs=allow_network_fs,
        tenant_owners=tenant_owners,
        compaction=CompactionSettings(intervals=intervals, snapshot_interval=snapshot_interval),
        poll_interval=poll_interval,
        lock_timeout=lock_timeout,
        janitor=JanitorSettings(
            retention=RetentionPolicy(level_retention=kept, snapshot_retention=snapshots),
            foreign_temp_age=foreign_temp_age,
            cleaning_timeout=cleaning_timeout,
        ),
        janitor_interval=janitor_interval,
        grace=grace,
        restart=restart,
        metrics_port=metrics_port,
        metrics_address=metrics_address,
        metrics_per_database=metrics_per_database,
        shipper=shipping,
    )


def load_config(path: str) -> PoolConfig:
    """Read and check a TOML config file; a syntax error names the line, a bad key names the key."""
    try:
        with open(path, "rb") as config_file:
            data = tomllib.load(config_file)
    except OSError as exc:
        raise ConfigError.from_oserror(path, "read config", exc) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "parse config", None, str(exc)) from exc
    return parse_config(data, path, os.path.dirname(os.path.abspath(path)))


def with_overrides(config: PoolConfig, **flags: Any) -> PoolConfig:
    """``config`` with every flag that was given (not None) in place of the file's value.

    Flags are named like the fields of :class:`PoolConfig`; ``hang_timeout`` goes
    into the restart policy. Replicas given on the command line replace the file's.
    """
    given = {name: value for name, value in flags.items() if value is not None and value != ()}
    hang_timeout = given.pop("hang_timeout", None)
    if "replicas" in given:
        given["replicas"] = tuple(os.path.abspath(root) for root in given["replicas"])
    if hang_timeout is not None:
        given["restart"] = dataclasses.replace(config.restart, hang_timeout=hang_timeout)
    return dataclasses.replace(config, **given)


def setting_warnings(config: PoolConfig) -> list[str]:
    """Settings that work but defeat one another, one line each, for the supervisor to log.

    Both concern ``hang_timeout``: a child silent that long is killed as hung, so it must
    outlast the longest wait the child can honestly be in. A worker's lock wait ends with
    a line naming the holder; a shipper's silence is one S3 attempt and botocore's
    backoff (``ltxpool.remote.client.LONGEST_SILENCE``). Killed sooner, neither can say
    what it was waiting for.
    """
    hang_timeout = config.restart.hang_timeout
    warnings = []
    if config.lock_timeout >= hang_timeout:
        warnings.append(f"lock_timeout {config.lock_timeout:g} s >= hang_timeout {hang_timeout:g} s: a worker "
                        "stalled by a lock holder is killed as hung before it can name the holder")
    if config.ships_off_host and hang_timeout <= LONGEST_SILENCE:
        warnings.append(f"hang_timeout {hang_timeout:g} s <= {LONGEST_SILENCE:g} s, the longest a shipper waits "
                        "on one S3 attempt and its backoff: a shipper waiting on a slow store may be killed as "
                        "hung before it can report the failure")
    return warnings


def check_replicas(config: PoolConfig, source: str = "<command line>") -> None:
    """Something to do; each replica an existing, safe directory (``check_root``), none listed twice;
    each ``[[databases]]`` entry's folders there and safe (``check_databases``)."""
    if not config.replicas and not config.databases:
        raise ConfigError(source, "replicas", None,
                          "no replica: name them on the command line or as replicas = [...] in the config file, "
                          "or give [[databases]] to replicate")
    seen: dict[str, str] = {}
    for root in config.replicas:
        if not os.path.isdir(root):
            raise ConfigError(root, "replicas", errno.ENOENT, "no such directory")
        _check_safe_root(root, "replicas", config.tenant_owners)
        real = os.path.realpath(root)
        if real in seen:
            raise ConfigError(root, "replicas", None, f"is the same directory as {seen[real]}")
        seen[real] = root
    check_databases(config.databases, config.tenant_owners)


def _check_safe_root(root: str, key: str, owners: Sequence[int]) -> None:
    try:
        check_root(root, owners)
    except UnsafeRootError as exc:
        raise ConfigError(root, key, None, exc.reason) from None


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _covers(folder: DatabaseDir, path: str) -> bool:
    """Whether the ``dir`` entry ``folder`` reaches the file or folder ``path``."""
    parent = os.path.dirname(path)
    return parent == folder.dir or (folder.recursive and _inside(parent, folder.dir))


def _refuse_overlap(index: int, entry: DatabaseEntry, folders: Sequence[tuple[int, DatabaseDir]]) -> None:
    """One database, one entry: two entries reaching one file would give it two replicas."""
    for other_index, other in folders:
        if other_index == index:
            continue
        if isinstance(entry, DatabaseFile):
            if _covers(other, entry.path) and fnmatch.fnmatchcase(os.path.basename(entry.path), other.pattern):
                raise ConfigError(entry.path, f"databases[{index}].path", None,
                                  f"is also matched by databases[{other_index}] (dir {other.dir})")
        elif other_index < index and (entry.dir == other.dir or _covers(other, entry.dir)
                                      or _covers(entry, other.dir)):
            raise ConfigError(entry.dir, f"databases[{index}].dir", None,
                              f"overlaps databases[{other_index}] (dir {other.dir}): give each folder one entry")


def check_databases(entries: Sequence[DatabaseEntry], owners: Sequence[int]) -> None:
    """Refuse at start what would fail later: a missing folder, an unsafe replica root, a
    replica tree inside the folder it replicates (its files would be scanned as sources),
    two entries for one database."""
    files: dict[str, int] = {}
    folders = [(index, entry) for index, entry in enumerate(entries) if isinstance(entry, DatabaseDir)]
    for index, entry in enumerate(entries):
        key = f"databases[{index}]"
        _refuse_overlap(index, entry, folders)
        if isinstance(entry, DatabaseFile):
            if entry.path in files:
                raise ConfigError(entry.path, f"{key}.path", None, f"is already databases[{files[entry.path]}]")
            files[entry.path] = index
            parent = os.path.dirname(entry.path)
            if not os.path.isdir(parent):
                raise ConfigError(parent, f"{key}.path", errno.ENOENT, "the database's folder does not exist")
            if os.path.isdir(entry.replica):
                _check_safe_root(entry.replica, f"{key}.replica", owners)
            elif not os.path.isdir(os.path.dirname(entry.replica)):
                raise ConfigError(entry.replica, f"{key}.replica", errno.ENOENT, "its parent folder does not exist")
            continue
        if not os.path.isdir(entry.dir):
            raise ConfigError(entry.dir, f"{key}.dir", errno.ENOENT, "no such directory")
        if not os.path.isdir(entry.replica_root):
            raise ConfigError(entry.replica_root, f"{key}.replica_root", errno.ENOENT, "no such directory")
        _check_safe_root(entry.replica_root, f"{key}.replica_root", owners)
        real_dir, real_root = os.path.realpath(entry.dir), os.path.realpath(entry.replica_root)
        if _inside(real_root, real_dir) or _inside(real_dir, real_root):
            raise ConfigError(entry.replica_root, f"{key}.replica_root", None,
                              f"overlaps the folder it replicates ({entry.dir}); put the replicas elsewhere")
    _refuse_shared_replicas(entries)


def _replica_key(entry: DatabaseEntry) -> tuple[str, str]:
    if isinstance(entry, DatabaseFile):
        return "replica", entry.replica
    return "replica_root", entry.replica_root


def _refuse_shared_replicas(entries: Sequence[DatabaseEntry]) -> None:
    """One replica, one database: two entries whose replicas meet (``/srv/a/x.db`` and
    ``/srv/b/x.db`` both under one ``replica_root``) would leave one of them unreplicated
    with only a "replica holds the history of ..." error at run time, and a replica tree
    inside another entry's folder would be watched and scanned as sources."""
    for index, entry in enumerate(entries):
        name, replica = _replica_key(entry)
        real = os.path.realpath(replica)
        for other_index, other in enumerate(entries):
            if other_index == index:
                continue
            other_name, other_replica = _replica_key(other)
            other_real = os.path.realpath(other_replica)
            if other_index < index and (_inside(real, other_real) or _inside(other_real, real)):
                raise ConfigError(replica, f"databases[{index}].{name}", None,
                                  f"overlaps databases[{other_index}].{other_name} ({other_replica}): "
                                  f"give each entry its own replica folder")
            if isinstance(other, DatabaseDir) and _inside(real, os.path.realpath(other.dir)):
                raise ConfigError(replica, f"databases[{index}].{name}", None,
                                  f"is inside databases[{other_index}].dir ({other.dir}); put the replicas elsewhere")
