"""The pool's TOML config: every bad key refused with its name and reason; flags win."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from ltxpool.discovery.entries import DatabaseDir, DatabaseFile
from ltxpool.pool import config as pool_config
from ltxpool.pool.config import (
    PoolConfig,
    check_databases,
    check_replicas,
    load_config,
    parse_config,
    setting_warnings,
    with_overrides,
)
from ltxpool.pool.errors import ConfigError
from ltxpool.remote import LONGEST_SILENCE, RemoteTarget


def documented_example() -> str:
    doc = pool_config.__doc__ or ""
    block = doc.split("here or on the command line, or databases needed)::\n", 1)[1]
    return "\n".join(line[4:] for line in block.split('"""')[0].splitlines())


def test_the_documented_example_parses_to_its_values(tmp_path: Path) -> None:
    path = tmp_path / "ltxpool.toml"
    path.write_text(documented_example())
    config = load_config(str(path))
    assert config.replicas == ("/var/lib/ltx/app", "/var/lib/ltx/billing")
    assert config.compaction.intervals == {1: 30.0, 2: 300.0, 3: 3600.0}
    assert config.janitor.retention.level_retention == {0: 300.0, 1: 86400.0, 2: 86400.0, 3: 86400.0}
    assert (config.metrics_port, config.metrics_address, config.grace) == (9464, "127.0.0.1", 10.0)
    assert config.metrics_per_database is False
    assert config.restart.crash_loop_restarts == 5 and config.restart.hang_timeout == 900.0
    assert config.databases == (
        DatabaseFile("/srv/app/app.db", "/srv/ltx/app", 1.0),
        DatabaseDir("/srv/tenants", "/srv/ltx/tenants", "*.db", True, 1.0,
                    RemoteTarget("bucket", "tenants", "http://127.0.0.1:9000", "us-east-1", True)),
    )
    assert (config.shipper.interval, config.shipper.relist_interval, config.shipper.lease_ttl,
            config.shipper.backoff_max) == (1.0, 3600.0, 120.0, 300.0)


def test_an_empty_file_is_the_defaults() -> None:
    assert parse_config({}) == PoolConfig()


def test_per_database_metrics_are_off_unless_asked_for() -> None:
    assert PoolConfig().metrics_per_database is False
    assert parse_config(tomllib.loads("[metrics]\nper_database = true")).metrics_per_database is True


@pytest.mark.parametrize(
    ("toml", "key", "reason"),
    [
        ("workers = 0", "workers", "must be from 1 to 256, not 0"),
        ("workers = 2.5", "workers", "must be an integer, not 2.5"),
        ("workers = true", "workers", "must be an integer, not True"),
        ('log_format = "xml"', "log_format", "must be one of text, json, not 'xml'"),
        ('allow_network_fs = "yes"', "allow_network_fs", "must be true or false, not 'yes'"),
        ("replicas = [1]", "replicas", "must be a list of directory paths, not [1]"),
        ("wokers = 2", "wokers", "unknown key"),
        ("compaction = 3", "compaction", "must be a table, not int"),
        ("[compaction]\nintervals = { 4 = 10 }", "compaction.intervals.4", "unknown level (levels are 1, 2, 3)"),
        ("[compaction]\nintervals = { 1 = -1 }", "compaction.intervals.1", "must be at least 0, not -1"),
        ('[compaction]\nsnapshot_interval = "daily"', "compaction.snapshot_interval",
         "must be a number of seconds, not 'daily'"),
        ("[compaction]\npoll_interval = 0", "compaction.poll_interval", "must be more than 0, not 0"),
        ("[compaction]\nfoo = 1", "compaction.foo", "unknown key"),
        ("[retention]\nlevels = { 9 = 1 }", "retention.levels.9", "unknown level (levels are 0, 1, 2, 3)"),
        ("[janitor]\ninterval = nan", "janitor.interval", "must be a number of seconds, not nan"),
        ("[janitor]\ncleaning_timeout = -0.5", "janitor.cleaning_timeout", "must be at least 0, not -0.5"),
        ("[supervisor]\ncrash_loop_restarts = -1", "supervisor.crash_loop_restarts", "must be at least 0, not -1"),
        ("[supervisor]\nhang_timeout = 0", "supervisor.hang_timeout", "must be more than 0, not 0"),
        ("[metrics]\nport = 70000", "metrics.port", "must be from 1 to 65535, not 70000"),
        ('[metrics]\naddress = ""', "metrics.address", "must be a non-empty string, not ''"),
        ("[metrics]\nper_database = 1", "metrics.per_database", "must be true or false, not 1"),
        ("databases = 3", "databases", "must be an array of tables ([[databases]])"),
        ('[[databases]]\nreplica = "/r"', "databases[0].path",
         "give either path (one database) or dir (every database in a folder)"),
        ('[[databases]]\npath = "/a.db"\ndir = "/d"', "databases[0].path",
         "give either path (one database) or dir (every database in a folder)"),
        ('[[databases]]\npath = "/a.db"', "databases[0].replica", "missing: the replica directory of this database"),
        ('[[databases]]\ndir = "/d"', "databases[0].replica_root",
         "missing: the folder the replicas of this dir's databases go under"),
        ('[[databases]]\ndir = "/d"\nreplica_root = "/r"\npattern = "a/*.db"', "databases[0].pattern",
         "matches file names, so it holds no '/': 'a/*.db'"),
        ('[[databases]]\ndir = "/d"\nreplica_root = "/r"\nrecursive = 1', "databases[0].recursive",
         "must be true or false, not 1"),
        ('[[databases]]\npath = "/a.db"\nreplica = "/r"\ninterval = 0', "databases[0].interval",
         "must be more than 0, not 0"),
        ('[[databases]]\npath = "/a.db"\nreplica = "/r"\nreplica_root = "/x"', "databases[0].replica_root",
         "unknown key"),
    ],
)
def test_each_invalid_value_is_refused_with_its_key_and_reason(toml: str, key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(tomllib.loads(toml), "pool.toml")
    assert (caught.value.path, caught.value.step, caught.value.reason) == ("pool.toml", key, reason)
    assert str(caught.value) == f"pool.toml: {key}: {reason}"


def test_a_toml_syntax_error_names_the_file_and_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("workers = 2\nreplicas = 3 3\n")
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    assert caught.value.path == str(path) and caught.value.step == "parse config"
    assert caught.value.reason.endswith("(at line 2, column 14)")


def test_relative_replicas_in_the_file_are_under_the_files_directory(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "ltxpool.toml"
    path.parent.mkdir()
    path.write_text('replicas = ["data/a", "/abs/b"]')
    assert load_config(str(path)).replicas == (str(tmp_path / "etc" / "data" / "a"), "/abs/b")


def test_flags_given_override_the_file_and_flags_not_given_keep_it(tmp_path: Path) -> None:
    config = parse_config(tomllib.loads('workers = 4\nlog_format = "json"\nreplicas = ["/a"]'))
    changed = with_overrides(config, workers=1, log_format=None, replicas=(), hang_timeout=5.0, grace=0.0)
    assert (changed.workers, changed.log_format, changed.replicas) == (1, "json", ("/a",))
    assert (changed.restart.hang_timeout, changed.grace) == (5.0, 0.0)
    assert with_overrides(config, replicas=("rel",)).replicas == (str(Path.cwd() / "rel"),)


def test_replicas_must_be_given_exist_and_be_distinct(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="replicas: no replica"):
        check_replicas(PoolConfig())
    with pytest.raises(ConfigError) as caught:
        check_replicas(PoolConfig(replicas=(str(tmp_path / "missing"),)))
    assert str(caught.value).startswith(f"{tmp_path / 'missing'}: replicas: no such directory")
    (tmp_path / "a").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "a")
    with pytest.raises(ConfigError, match="is the same directory as"):
        check_replicas(PoolConfig(replicas=(str(tmp_path / "a"), str(tmp_path / "link"))))


def test_database_entries_are_checked_against_the_disk_at_start(tmp_path: Path) -> None:
    """A missing folder, a replica tree inside the folder it replicates, a database named twice."""
    (tmp_path / "src").mkdir()
    (tmp_path / "ltx").mkdir(mode=0o755)
    tmp_path.chmod(0o755)
    ok = DatabaseDir(str(tmp_path / "src"), str(tmp_path / "ltx"))
    check_databases([ok, DatabaseFile(str(tmp_path / "src" / "a.sqlite"), str(tmp_path / "ltx-a"))], ())
    cases = [
        (DatabaseDir(str(tmp_path / "nope"), str(tmp_path / "ltx")), "databases[0].dir: no such directory"),
        (DatabaseDir(str(tmp_path / "src"), str(tmp_path / "src" / "ltx")), "databases[0].replica_root: "),
        (DatabaseFile(str(tmp_path / "gone" / "a.db"), str(tmp_path / "r")),
         "databases[0].path: the database's folder does not exist"),
    ]
    (tmp_path / "src" / "ltx").mkdir(mode=0o755)
    for entry, message in cases:
        with pytest.raises(ConfigError) as caught:
            check_databases([entry], ())
        assert message in str(caught.value)
    nested = DatabaseDir(str(tmp_path / "src" / "ltx"), str(tmp_path / "ltx"))
    with pytest.raises(ConfigError, match=r"databases\[1\]\.dir: overlaps databases\[0\]"):
        check_databases([DatabaseDir(str(tmp_path / "src"), str(tmp_path / "ltx"), recursive=True), nested], ())
    with pytest.raises(ConfigError, match=r"databases\[1\]\.path: is also matched by databases\[0\]"):
        check_databases([ok, DatabaseFile(str(tmp_path / "src" / "b.db"), str(tmp_path / "r"))], ())
    twice = DatabaseFile(str(tmp_path / "src" / "a.db"), str(tmp_path / "r"))
    with pytest.raises(ConfigError, match=r"databases\[1\]\.path: is already databases\[0\]"):
        check_databases([twice, twice], ())


def test_relative_database_paths_are_under_the_files_directory(tmp_path: Path) -> None:
    path = tmp_path / "ltxpool.toml"
    path.write_text('[[databases]]\ndir = "tenants"\nreplica_root = "ltx"\ninterval = 2\n')
    assert load_config(str(path)).databases == (
        DatabaseDir(str(tmp_path / "tenants"), str(tmp_path / "ltx"), "*.db", False, 2.0),)


REMOTE_DIR = """
[[databases]]
dir = "/srv/tenants"
replica_root = "/srv/ltx"

[databases.remote]
url = "s3://bucket/tenants"
endpoint = "http://127.0.0.1:9000"

[[databases]]
path = "/srv/app/app.db"
replica = "/srv/ltx-app"
"""


def test_a_remote_table_belongs_to_the_entry_just_above_it_and_maps_each_database_to_its_own_prefix() -> None:
    from ltxpool.discovery import remote_for

    config = parse_config(tomllib.loads(REMOTE_DIR))
    folder, single = config.databases
    assert isinstance(folder, DatabaseDir) and isinstance(single, DatabaseFile)
    assert folder.remote == RemoteTarget("bucket", "tenants", "http://127.0.0.1:9000", "us-east-1", True)
    assert single.remote is None
    # The local replica's mapping: <prefix>/<path relative to dir>.
    assert remote_for(folder, "/srv/tenants/a/b.db") == RemoteTarget(
        "bucket", "tenants/a/b.db", "http://127.0.0.1:9000", "us-east-1", True)
    with_remote = parse_config(tomllib.loads(REMOTE_DIR.replace('replica = "/srv/ltx-app"\n',
                                                                'replica = "/srv/ltx-app"\nremote = { url = "s3://b/app" }\n')))
    assert remote_for(with_remote.databases[1], "/srv/app/app.db") == RemoteTarget("b", "app")


@pytest.mark.parametrize(
    ("remote", "key", "reason"),
    [
        ('url = "http://bucket/x"', "databases[0].remote.url", "must be an s3://bucket/prefix URL"),
        ('url = "s3://bucket"', "databases[0].remote.url", "needs a prefix after the bucket"),
        ('endpoint = "http://h:9000"', "databases[0].remote.url", "is required"),
        ('url = "s3://b/p"\nsecret_access_key = "x"', "databases[0].remote.secret_access_key",
         "credentials are never read from the config"),
        ('url = "s3://b/p"\nendpoint = "http://key:secret@h:9000"', "databases[0].remote.endpoint",
         "must not hold credentials"),
        ('url = "s3://b/p"\nbucket = "x"', "databases[0].remote.bucket", "unknown key"),
    ],
)
def test_a_bad_remote_is_refused_with_its_dotted_key_and_never_echoes_a_secret(
    remote: str, key: str, reason: str,
) -> None:
    text = f'[[databases]]\ndir = "/srv/t"\nreplica_root = "/srv/l"\n[databases.remote]\n{remote}\n'
    with pytest.raises(ConfigError) as raised:
        parse_config(tomllib.loads(text), "/etc/ltxpool.toml")
    assert raised.value.step == key and reason in raised.value.reason
    assert raised.value.path == "/etc/ltxpool.toml"
    assert "secret" not in str(raised.value).replace("secret_access_key", "")


def test_shipper_settings_are_checked() -> None:
    config = parse_config(tomllib.loads("[shipper]\ninterval = 0.5\nmultipart_threshold = 1024\npart_size = 5242880"))
    assert config.shipper.interval == 0.5 and config.shipper.ship.multipart_threshold == 1024
    with pytest.raises(ConfigError) as raised:
        parse_config(tomllib.loads("[shipper]\npart_size = 1024"))
    assert raised.value.step == "shipper.part_size" and "at least 5242880" in raised.value.reason
    with pytest.raises(ConfigError) as raised:
        parse_config(tomllib.loads("[shipper]\nspeed = 1"))
    assert raised.value.step == "shipper.speed"


def test_a_hang_timeout_shorter_than_a_lock_wait_or_a_shippers_longest_silence_is_warned_about() -> None:
    """Each warning only where its wait exists: the shipper's only with a remote, and only below
    its bound (83 s: 10 s connect, 60 s read, 13 s botocore backoff); the default 900 s is quiet."""
    remote = parse_config(tomllib.loads(REMOTE_DIR))
    local = parse_config(tomllib.loads('[[databases]]\npath = "/srv/app/app.db"\nreplica = "/srv/ltx-app"\n'))
    assert LONGEST_SILENCE == 83.0
    assert setting_warnings(remote) == setting_warnings(local) == []
    short = {name: with_overrides(config, hang_timeout=12.0, lock_timeout=5.0) for name, config in
             (("remote", remote), ("local", local))}
    assert setting_warnings(short["local"]) == []
    (warning,) = setting_warnings(short["remote"])
    assert warning.startswith("hang_timeout 12 s <= 83 s, the longest a shipper waits on one S3 attempt")
    assert setting_warnings(with_overrides(short["remote"], hang_timeout=LONGEST_SILENCE + 1)) == []
    (lock,) = setting_warnings(with_overrides(local, hang_timeout=12.0, lock_timeout=12.0))
    assert lock.startswith("lock_timeout 12 s >= hang_timeout 12 s: a worker stalled by a lock holder")
    assert len(setting_warnings(with_overrides(remote, hang_timeout=12.0, lock_timeout=12.0))) == 2
