"""The pool's TOML config: every bad key refused with its name and reason; flags win."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from ltxpool.pool import config as pool_config
from ltxpool.pool.config import (
    PoolConfig,
    check_replicas,
    load_config,
    parse_config,
    with_overrides,
)
from ltxpool.pool.errors import ConfigError


def documented_example() -> str:
    doc = pool_config.__doc__ or ""
    block = doc.split("Example (every key optional except ``replicas``, here or on the command line)::\n", 1)[1]
    return "\n".join(line[4:] for line in block.split('"""')[0].splitlines())


def test_the_documented_example_parses_to_its_values(tmp_path: Path) -> None:
    path = tmp_path / "ltxpool.toml"
    path.write_text(documented_example())
    config = load_config(str(path))
    assert config.replicas == ("/var/lib/ltx/app", "/var/lib/ltx/billing")
    assert config.compaction.intervals == {1: 30.0, 2: 300.0, 3: 3600.0}
    assert config.janitor.retention.level_retention == {0: 300.0, 1: 86400.0, 2: 86400.0, 3: 86400.0}
    assert (config.metrics_port, config.metrics_address, config.grace) == (9464, "127.0.0.1", 10.0)
    assert config.restart.crash_loop_restarts == 5 and config.restart.hang_timeout == 900.0


def test_an_empty_file_is_the_defaults() -> None:
    assert parse_config({}) == PoolConfig()


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
