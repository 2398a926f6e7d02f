"""The by-hand commands: restore, compact, janitor; clear one-line errors on bad input."""

from __future__ import annotations

import io
import sqlite3
import subprocess
import sys
from pathlib import Path

from ltxpool.ltx import HEADER_FLAG_NO_CHECKSUM, Encoder, Header
from ltxpool.replica.atomic import write_atomic
from ltxpool.replica.layout import Replica
from ltxpool.replicate.replicator import Replicator
from tests.support.helpers import run_ltxpool
from tests.support.synthetic import SyntheticStream


def test_compact_then_restore_by_hand_and_restore_refuses_to_overwrite(tmp_path: Path) -> None:
    stream = SyntheticStream(Replica(tmp_path / "replica"), seed=21)
    stream.run(5)
    done = run_ltxpool("compact", str(tmp_path / "replica"))
    assert done.returncode == 0, done.stderr
    assert "level 1: merged 5 files, TXID 1-5" in done.stdout
    assert "level 9: merged" in done.stdout
    again = run_ltxpool("compact", str(tmp_path / "replica"), "--level", "1")
    assert "level 1: nothing to do" in again.stdout
    existing = tmp_path / "exists.db"
    existing.write_bytes(b"keep me")
    refused = run_ltxpool("restore", str(tmp_path / "replica"), str(existing))
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        f"ltxpool: error: {existing}: restore: output already exists; restore writes a new file [EEXIST]"
    ]
    assert existing.read_bytes() == b"keep me"


def test_restore_of_a_sqlite_replica_reports_its_checks(tmp_path: Path) -> None:
    stream = SyntheticStream(Replica(tmp_path / "replica"), seed=1)
    stream.run(2)
    output = tmp_path / "out.db"
    done = run_ltxpool("restore", str(tmp_path / "replica"), str(output), "--txid", "1")
    # Synthetic pages are not a SQLite database: the integrity check must refuse them,
    # and nothing may be left under the output name.
    assert done.returncode == 1
    assert "integrity check" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not output.exists()
    assert not list(tmp_path.glob("out.db*"))


def test_restore_to_an_unreachable_txid_names_the_gap(tmp_path: Path) -> None:
    stream = SyntheticStream(Replica(tmp_path / "replica"), seed=2)
    stream.run(3)
    done = run_ltxpool("restore", str(tmp_path / "replica"), str(tmp_path / "x.db"), "--txid", "9")
    assert done.returncode == 1
    assert "TXID 9 is not reachable: gap after TXID 3" in done.stderr


def test_janitor_by_hand_reports_what_it_did(tmp_path: Path) -> None:
    stream = SyntheticStream(Replica(tmp_path / "replica"), seed=3)
    stream.run(2)
    orphan = Path(stream.replica.level_dir(0)) / "0000000000000003-0000000000000003.ltx.ltxpool-1-0123abcd.tmp"
    orphan.write_bytes(b"half")
    done = run_ltxpool("janitor", str(tmp_path / "replica"))
    assert done.returncode == 0, done.stderr
    assert "orphans removed: 1, quarantined: 0" in done.stdout
    assert not orphan.exists()


def test_a_real_sqlite_database_round_trips_through_snapshot_and_restore(tmp_path: Path) -> None:
    database = tmp_path / "source.db"
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)")
        connection.executemany("INSERT INTO t (body) VALUES (?)", [(f"row {i} " * 20,) for i in range(500)])
    data = database.read_bytes()
    page_size = int.from_bytes(data[16:18], "big")
    replica = Replica(tmp_path / "replica")
    buffer = io.BytesIO()
    header = Header(flags=HEADER_FLAG_NO_CHECKSUM, page_size=page_size, commit=len(data) // page_size, min_txid=1, max_txid=1,
                    timestamp=0, pre_apply_checksum=0, wal_offset=0, wal_size=0, wal_salt1=0, wal_salt2=0, node_id=0)
    encoder = Encoder(buffer, header)
    for pgno in range(1, header.commit + 1):
        encoder.write_page(pgno, data[(pgno - 1) * page_size: pgno * page_size])
    encoder.finish()
    replica.ensure_level_dir(0)
    write_atomic(replica.path_of(0, 1, 1), buffer.getvalue())
    output = tmp_path / "restored.db"
    done = run_ltxpool("restore", str(replica.root), str(output))
    assert done.returncode == 0, done.stderr
    assert "integrity_check ok" in done.stdout
    assert "no database checksum recorded for this TXID (not verified)" in done.stdout, "a file alone carries none"
    assert output.read_bytes() == data


def test_restore_says_it_verified_the_database_checksum_replicate_recorded(tmp_path: Path) -> None:
    database = tmp_path / "source.db"
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)")
    with Replicator(database, tmp_path / "replica") as replicator:
        replicator.step()
    done = run_ltxpool("restore", str(tmp_path / "replica"), str(tmp_path / "restored.db"))
    assert done.returncode == 0, done.stderr
    assert "database checksum verified against the txid record, integrity_check ok" in done.stdout
    assert (tmp_path / "restored.db").read_bytes() == database.read_bytes()


def test_restore_of_a_chain_longer_than_the_soft_open_file_limit_succeeds(tmp_path: Path) -> None:
    stream = SyntheticStream(Replica(tmp_path / "replica"), seed=4, checksums=False)
    stream.run(400)
    output = tmp_path / "out.db"
    done = subprocess.run(
        ["bash", "-c", f'ulimit -Sn 256 && exec "{sys.executable}" -m ltxpool.cli restore "{tmp_path / "replica"}" "{output}"'],
        capture_output=True, text=True, timeout=120,
    )
    # The synthetic pages are no SQLite database: getting as far as the integrity check
    # means all 400 files were open at once under a soft limit of 256.
    assert "integrity check" in done.stderr, done.stderr
    assert "Too many open files" not in done.stderr


def test_restore_compare_proves_page_equality_with_the_source_and_names_the_first_different_page(
    tmp_path: Path,
) -> None:
    database = tmp_path / "source.db"
    with sqlite3.connect(database) as connection:
        connection.execute("PRAGMA journal_mode=wal")
        connection.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)")
        connection.executemany("INSERT INTO t (body) VALUES (?)", [(f"row {i} " * 30,) for i in range(300)])
    replica = tmp_path / "replica"
    assert run_ltxpool("replicate", str(database), str(replica), "--once").returncode == 0
    same = run_ltxpool("restore", str(replica), str(tmp_path / "same.db"), "--compare", str(database))
    assert same.returncode == 0, same.stderr
    assert f"{tmp_path / 'same.db'} equals {database} page for page" in same.stdout
    with sqlite3.connect(database) as connection:
        connection.execute("UPDATE t SET body = 'changed' WHERE id = 150")
    differs = run_ltxpool("restore", str(replica), str(tmp_path / "old.db"), "--compare", str(database))
    assert differs.returncode == 1
    assert differs.stderr.startswith(f"ltxpool: error: {tmp_path / 'old.db'}: compare: page ")
    assert f"differs from the source {database}" in differs.stderr
    assert (tmp_path / "old.db").exists(), "a valid restore is kept even when the source has moved on"
