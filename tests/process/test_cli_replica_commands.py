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
    assert "level 1: merged 4 files, TXID 2-5" in done.stdout, "level 1 starts after the snapshot at TXID 1"
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
    assert "TXID 9 is beyond the latest TXID 3 (0/0000000000000003-0000000000000003.ltx)" in done.stderr


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


def _replicate_three_versions(tmp_path: Path) -> tuple[Path, Replica, dict[int, bytes]]:
    """A real database replicated at three TXIDs; the bytes of the database at each (the oracle)."""
    database = tmp_path / "source.db"
    replica = Replica(tmp_path / "replica")
    images: dict[int, bytes] = {}
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)")
    for version in range(3):
        with sqlite3.connect(database) as connection:
            connection.executemany("INSERT INTO t (body) VALUES (?)", [(f"v{version} row {i} " * 10,) for i in range(200)])
        assert run_ltxpool("replicate", str(database), str(replica.root), "--once").returncode == 0
        images[max(f.max_txid for listing in replica.list_all().values() for f in listing.files)] = database.read_bytes()
    assert sorted(images) == [1, 2, 3]
    return database, replica, images


def test_restore_of_the_latest_txid_fails_on_a_gap_naming_it_unless_allowed_then_restores_below(tmp_path: Path) -> None:
    _, replica, images = _replicate_three_versions(tmp_path)
    # Control: with every file present, the latest TXID restores and equals the oracle.
    whole = run_ltxpool("restore", str(replica.root), str(tmp_path / "whole.db"))
    assert whole.returncode == 0 and "restored TXID 3 " in whole.stdout
    assert (tmp_path / "whole.db").read_bytes() == images[3]
    Path(replica.path_of(0, 2, 2)).unlink()
    gap = run_ltxpool("restore", str(replica.root), str(tmp_path / "gap.db"))
    assert gap.returncode == 1 and gap.stdout == ""
    assert gap.stderr == (
        f"ltxpool: error: {replica.path_of(9, 1, 1)}: plan restore: TXID 3 is not reachable: gap after TXID 1: "
        "TXIDs 2-2 are in no file, between 9/0000000000000001-0000000000000001.ltx and "
        "0/0000000000000003-0000000000000003.ltx\n"
    )
    assert not list(tmp_path.glob("gap.db*"))
    allowed = run_ltxpool("restore", str(replica.root), str(tmp_path / "allowed.db"), "--allow-gap")
    assert allowed.returncode == 0, allowed.stderr
    assert allowed.stderr.startswith("ltxpool: warning: restoring TXID 1 instead: TXID 3 is not reachable")
    assert "restored TXID 1 " in allowed.stdout
    assert (tmp_path / "allowed.db").read_bytes() == images[1]


def test_restore_beyond_the_latest_txid_fails_unless_allowed_then_restores_the_latest(tmp_path: Path) -> None:
    _, replica, images = _replicate_three_versions(tmp_path)
    beyond = run_ltxpool("restore", str(replica.root), str(tmp_path / "beyond.db"), "--txid", "7")
    assert beyond.returncode == 1
    assert beyond.stderr.strip().endswith("TXID 7 is beyond the latest TXID 3 (0/0000000000000003-0000000000000003.ltx)")
    assert len(beyond.stderr.splitlines()) == 1
    allowed = run_ltxpool("restore", str(replica.root), str(tmp_path / "latest.db"), "--txid", "7", "--allow-gap")
    assert allowed.returncode == 0, allowed.stderr
    assert "restored TXID 3 " in allowed.stdout and "restoring TXID 3 instead" in allowed.stderr
    assert (tmp_path / "latest.db").read_bytes() == images[3]


def test_a_restored_database_is_private_unless_a_mode_is_asked(tmp_path: Path) -> None:
    database = tmp_path / "app.db"
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TABLE t(x)")
    connection.close()
    assert run_ltxpool("replicate", str(database), str(tmp_path / "replica"), "--once").returncode == 0
    assert run_ltxpool("restore", str(tmp_path / "replica"), str(tmp_path / "private.db")).returncode == 0
    assert (tmp_path / "private.db").stat().st_mode & 0o777 == 0o600
    asked = run_ltxpool("restore", str(tmp_path / "replica"), str(tmp_path / "shared.db"), "--mode", "0640")
    assert asked.returncode == 0 and (tmp_path / "shared.db").stat().st_mode & 0o777 == 0o640
    refused = run_ltxpool("restore", str(tmp_path / "replica"), str(tmp_path / "open.db"), "--mode", "0666")
    assert refused.returncode == 2 and "not writable by others" in refused.stderr
    assert not (tmp_path / "open.db").exists()
