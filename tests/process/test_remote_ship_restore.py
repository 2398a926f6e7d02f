"""An off-host copy in a real S3 API server: shipped by ltxpool, restored by ltxpool and Litestream.

Oracle: the rows the test committed. The replica is made as a user makes one
(``ltxpool replicate --once`` between commits, ``ltxpool compact``); the bucket is
served by moto's S3 server (tests/support/s3_server.py) and read by the real
Litestream 0.5.17 binary as well.
"""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import time
from contextlib import closing
from pathlib import Path

from ltxpool.remote import make_client, parse_key, ship_replica
from ltxpool.replica.layout import Replica
from tests.support.helpers import run_ltxpool
from tests.support.litestream_peer import LITESTREAM, SQLiteWriter, create_wal_database, read_rows
from tests.support.s3_server import S3


def _commit(db: str, rng: random.Random, rows: dict[int, bytes], n: int) -> None:
    with closing(sqlite3.connect(db)) as conn, conn:
        for _ in range(n):
            payload = rng.randbytes(rng.choice((50, 400, 3000)))
            row = conn.execute("INSERT INTO items (payload) VALUES (?)", (payload,)).lastrowid
            assert row is not None
            rows[row] = payload
        if len(rows) > 5:
            gone = rng.choice(sorted(rows))
            conn.execute("DELETE FROM items WHERE id = ?", (gone,))
            del rows[gone]


def make_replica(tmp_path: Path, steps: int = 6, seed: int = 1) -> tuple[str, str, dict[int, bytes]]:
    """A WAL database and its replica after ``steps`` replicate --once with commits between, compacted."""
    db, root = str(tmp_path / "app.db"), str(tmp_path / "replica")
    create_wal_database(db)
    rng, rows = random.Random(seed), {}
    for step in range(steps):
        _commit(db, rng, rows, 3 + step)
        done = run_ltxpool("replicate", db, root, "--once")
        assert done.returncode == 0, done.stderr
        if step == steps // 2:
            compacted = run_ltxpool("compact", root)
            assert compacted.returncode == 0, compacted.stderr
    return db, root, rows


def _rows(db: str) -> dict[int, bytes]:
    return dict(read_rows(db))


def test_a_shipped_replica_restores_with_ltxpool_from_the_bucket_and_a_reship_uploads_nothing(tmp_path, s3: S3):
    _, root, rows = make_replica(tmp_path)
    target = s3.target("apps/app")
    report = ship_replica(Replica(root), make_client(target), target)
    local = {(f.level, f.name): f.size for listing in Replica(root).list_all().values() for f in listing.files}
    levels = {level for level, _ in local}
    assert 9 in levels and 0 in levels and levels & {1, 2, 3}, f"the replica has snapshots, changes and compactions: {levels}"
    assert len(report.uploaded) == len(local) and report.present == 0
    assert not (report.corrupt or report.conflicts or report.vanished)
    # Every object is under Litestream's key, level as 4 hex digits, with the local file's size.
    held = s3.keys("apps/app/")
    assert sorted(held) == sorted(report.uploaded)
    for key, size in held.items():
        level, low, high = parse_key(target, key) or (None, 0, 0)
        name = f"{low:016x}-{high:016x}.ltx"
        assert key == f"apps/app/{level:04x}/{name}" and local[level, name] == size

    out = tmp_path / "restored.db"
    done = run_ltxpool("restore", s3.url("apps/app"), str(out))
    assert done.returncode == 0, done.stderr
    assert _rows(str(out)) == rows
    verified = run_ltxpool("verify", s3.url("apps/app"))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"verified {len(local)} files: {len(local)} ok, 0 bad" in verified.stdout

    again = ship_replica(Replica(root), make_client(target), target)
    assert again.uploaded == [] and again.bytes_uploaded == 0 and again.present == len(local)


def test_ship_after_more_commits_sends_only_the_new_files_and_an_older_txid_restores(tmp_path, s3: S3):
    db, root, rows = make_replica(tmp_path, steps=3)
    target = s3.target("db")
    first = ship_replica(Replica(root), make_client(target), target)
    latest = max(parse_key(target, key)[2] for key in first.uploaded)  # type: ignore[index]
    before = dict(rows)
    _commit(db, random.Random(9), rows, 5)
    assert run_ltxpool("replicate", db, root, "--once").returncode == 0
    second = ship_replica(Replica(root), make_client(target), target)
    assert len(second.uploaded) == 1 and second.present == len(first.uploaded)
    out_new, out_old = tmp_path / "new.db", tmp_path / "old.db"
    assert run_ltxpool("restore", s3.url("db"), str(out_new)).returncode == 0
    assert _rows(str(out_new)) == rows
    done = run_ltxpool("restore", s3.url("db"), str(out_old), "--txid", str(latest))
    assert done.returncode == 0, done.stderr
    assert _rows(str(out_old)) == before


def _litestream_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("AWS_CA_BUNDLE", "LOG_LEVEL")}
    return env


def test_litestream_restores_what_ltxpool_shipped(tmp_path, s3: S3):
    _, root, rows = make_replica(tmp_path)
    target = s3.target("db")
    ship_replica(Replica(root), make_client(target), target)
    out = tmp_path / "by-litestream.db"
    done = subprocess.run([LITESTREAM, "restore", "-o", str(out), s3.url("db")], capture_output=True, text=True,
                          timeout=120, env=_litestream_env(), stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _rows(str(out)) == rows


def _s3_config(db: str, s3: S3, prefix: str) -> str:
    return (
        "levels:\n  - interval: 1000ms\n  - interval: 2000ms\n"
        "snapshot:\n  interval: 2000ms\n  retention: 3600000ms\n"
        "logging:\n  level: info\n"
        "dbs:\n"
        f"  - path: \"{db}\"\n"
        "    monitor-interval: 100ms\n"
        "    checkpoint-interval: 1000ms\n"
        "    replica:\n"
        "      type: s3\n"
        f"      bucket: {s3.bucket}\n"
        f"      path: {prefix}\n"
        f"      endpoint: {s3.endpoint}\n"
        "      region: us-east-1\n"
        "      force-path-style: true\n"
        "      sync-interval: 100ms\n"
    )


def test_ltxpool_restores_what_litestream_replicated_to_the_bucket(tmp_path, s3: S3):
    db = str(tmp_path / "app.db")
    create_wal_database(db)
    config = tmp_path / "litestream.yml"
    config.write_text(_s3_config(db, s3, "from-litestream"))
    log = open(tmp_path / "litestream.log", "wb")  # noqa: SIM115
    process = subprocess.Popen([LITESTREAM, "replicate", "-no-expand-env", "-config", str(config)],
                               stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               env=_litestream_env(), start_new_session=True)
    try:
        with SQLiteWriter(db, period=0.02) as writer:
            deadline = time.monotonic() + 30
            while writer.commits < 60 or not any("/0009/" in k for k in s3.keys("from-litestream/")):
                assert time.monotonic() < deadline, (tmp_path / "litestream.log").read_text()
                assert process.poll() is None, (tmp_path / "litestream.log").read_text()
                time.sleep(0.1)
        time.sleep(1.0)  # the last commits reach the bucket (sync-interval 100 ms)
    finally:
        process.terminate()
        process.wait(30)
        log.close()
    assert process.returncode == 0, (tmp_path / "litestream.log").read_text()
    keys = s3.keys("from-litestream/")
    assert {key.split("/")[1] for key in keys} >= {"0000", "0009"}, sorted(keys)
    out = tmp_path / "by-ltxpool.db"
    done = run_ltxpool("restore", s3.url("from-litestream"), str(out))
    assert done.returncode == 0, done.stderr
    assert read_rows(out) == read_rows(db)
    verified = run_ltxpool("verify", "--all", s3.url("from-litestream"))
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_a_damaged_object_is_named_by_verify_and_restore_refuses_it(tmp_path, s3: S3):
    _, root, _ = make_replica(tmp_path, steps=3)
    target = s3.target("db")
    report = ship_replica(Replica(root), make_client(target), target)
    newest = max((k for k in report.uploaded if "/0000/" in k), key=lambda k: parse_key(target, k)[2])  # type: ignore[index]
    data = bytearray(s3.body(newest))
    data[len(data) // 2] ^= 0xFF
    s3.client().put_object(Bucket=s3.bucket, Key=newest, Body=bytes(data))
    verified = run_ltxpool("verify", s3.url("db"))
    assert verified.returncode == 1
    assert f"BAD s3://{s3.bucket}/{newest}: corrupt at byte" in verified.stdout, verified.stdout
    done = run_ltxpool("restore", s3.url("db"), str(tmp_path / "out.db"))
    assert done.returncode == 1 and f"s3://{s3.bucket}/{newest}" in done.stderr, done.stderr
    assert not (tmp_path / "out.db").exists()
