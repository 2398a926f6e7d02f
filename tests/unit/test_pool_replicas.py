"""Which replicas the pool looks after: found from the folders' names, each once, in one walk."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import pytest

from ltxpool.pool import replicas
from ltxpool.pool.config import PoolConfig, parse_config


def host(tmp_path: Path) -> PoolConfig:
    """Two ``dir`` entries (one shipped to a bucket) and one ``path`` entry; some databases have
    a replica directory already, one only a link where its replica would be."""
    for folder, names in (("shipped", ("a.db", "b.db", "new.db")), ("local", ("c.db", "linked.db"))):
        (tmp_path / folder).mkdir()
        for name in names:
            (tmp_path / folder / name).write_bytes(b"")
    (tmp_path / "single.db").write_bytes(b"")
    for replica in ("ltx-shipped/a.db", "ltx-shipped/b.db", "ltx-local/c.db", "ltx-single"):
        (tmp_path / replica).mkdir(parents=True)
    os.symlink(tmp_path / "ltx-local/c.db", tmp_path / "ltx-local/linked.db")
    return parse_config(tomllib.loads(f"""
[[databases]]
dir = "{tmp_path}/shipped"
replica_root = "{tmp_path}/ltx-shipped"

[databases.remote]
url = "s3://bucket/tenants"
endpoint = "http://127.0.0.1:9000"

[[databases]]
dir = "{tmp_path}/local"
replica_root = "{tmp_path}/ltx-local"

[[databases]]
path = "{tmp_path}/single.db"
replica = "{tmp_path}/ltx-single"
"""))


def test_the_janitors_one_walk_finds_what_the_two_separate_questions_find(tmp_path: Path) -> None:
    config = host(tmp_path)
    roots, remotes = replicas.looked_after(config)
    assert roots == replicas.replica_roots(config) == [
        f"{tmp_path}/ltx-local/c.db", f"{tmp_path}/ltx-shipped/a.db", f"{tmp_path}/ltx-shipped/b.db",
        f"{tmp_path}/ltx-single"]
    assert remotes == replicas.remote_replicas(config)
    assert sorted(remotes) == [f"{tmp_path}/ltx-shipped/a.db", f"{tmp_path}/ltx-shipped/b.db"]
    assert {target.prefix for target in remotes.values()} == {"tenants/a.db", "tenants/b.db"}


def test_the_janitor_walks_each_folder_once_a_round_where_the_two_questions_walk_a_shipped_one_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = host(tmp_path)
    walked: list[str] = []
    real_walk = replicas.walk

    def counting_walk(*args: Any, **kwargs: Any) -> Any:
        walked.append(os.path.basename(args[0]))
        return real_walk(*args, **kwargs)

    monkeypatch.setattr(replicas, "walk", counting_walk)
    replicas.looked_after(config)
    assert sorted(walked) == ["local", "shipped"]
    walked.clear()
    replicas.replica_roots(config)
    replicas.remote_replicas(config)
    assert sorted(walked) == ["local", "shipped", "shipped"], "control: the two questions asked apart"
