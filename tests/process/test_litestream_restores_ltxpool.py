"""Litestream 0.5.17 restores every file ltxpool writes, to the bytes ltxpool's restore gives.

Each workload is replicated by ``Replicator`` and kept as an oracle: the database image
(``serialize()``) at every TXID, or, for an app committing while replicate steps, the
rows its numbered commits must leave. At every TXID either tool accepts, both restores
are compared with each other and with that oracle -- after plain replication (WAL and
rollback journal), after compaction at levels 1, 2, 3 and 9, after a page-size change,
after retention. The controls run in the same session: the same files in the old form
(flags 0, database checksums in the files) make Litestream fail with the error users
reported, while ltxpool still restores them; a consistent-but-wrong file is caught by
the per-TXID record, and passes unnoticed without it.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import replace
from pathlib import Path

import pytest

from ltxpool.ltx import HEADER_FLAG_NO_CHECKSUM, Encoder, Header, open_ltx, verify_file
from ltxpool.ltx.errors import CorruptLTXError
from ltxpool.replica.compactor import compact_level
from ltxpool.replica.errors import RestorePlanError
from ltxpool.replica.janitor import JanitorSettings, janitor_pass
from ltxpool.replica.layout import LEVELS, STATE_DIR, Replica
from ltxpool.replica.restore import POST_APPLY, TXID_RECORD, restore
from ltxpool.replica.retention import RetentionPolicy
from ltxpool.replica.txid_record import RECORD_NAME, recorded_checksum
from ltxpool.replicate.replicator import Replicator
from tests.support.litestream_peer import LitestreamError, litestream_restore, replica_ltx_files
from tests.support.replicate_workload import CHANGES, Database

Images = dict[int, bytes]


def ltxpool_bytes(replica: Path, out: Path, txid: int | None = None) -> bytes | None:
    try:
        restore(Replica(replica), out, txid)
    except RestorePlanError:
        return None
    return out.read_bytes()


def litestream_bytes(replica: Path, out: Path, txid: int | None = None) -> bytes | None:
    try:
        litestream_restore(replica, out, txid)
    except LitestreamError as exc:
        if "not available" in exc.output or "no matching backup files" in exc.output:
            return None
        raise
    return out.read_bytes()


def assert_both_restore_every_txid(replica: Path, images: Images, scratch: Path, *, at_least: int = 4) -> list[int]:
    """Every TXID either tool accepts: both accept it, give the same bytes, and the image
    recorded at that TXID; the latest too. Returns the TXIDs restored."""
    scratch.mkdir(parents=True, exist_ok=True)
    tag = time.monotonic_ns()
    restored = []
    for txid in sorted(images):
        ours = ltxpool_bytes(replica, scratch / f"ours-{tag}-{txid}.db", txid)
        theirs = litestream_bytes(replica, scratch / f"theirs-{tag}-{txid}.db", txid)
        assert (ours is None) == (theirs is None), f"TXID {txid}: only one tool restores it"
        if ours is None:
            continue
        assert ours == theirs, f"TXID {txid}: Litestream's restore differs from ltxpool's"
        assert ours == images[txid], f"TXID {txid}: the restore is not the database at that TXID"
        restored.append(txid)
    latest = max(images)
    assert ltxpool_bytes(replica, scratch / f"ours-{tag}.db") == images[latest]
    assert litestream_bytes(replica, scratch / f"theirs-{tag}.db") == images[latest]
    assert latest in restored and len(restored) >= at_least, restored
    print(f"restored by both tools, equal to the image: TXIDs {restored} of {sorted(images)}")
    return restored


def every_file(replica: Path) -> list[Path]:
    return [path for level in LEVELS for path in replica_ltx_files(replica, level)]


def assert_litestream_form(replica: Path) -> None:
    for path in every_file(replica):
        header = verify_file(path)
        with open_ltx(path) as decoder:
            for _ in decoder.pages():
                pass
            assert decoder.trailer is not None
            form = (header.flags, header.pre_apply_checksum, decoder.trailer.post_apply_checksum)
        assert form == (HEADER_FLAG_NO_CHECKSUM, 0, 0), f"{path}: {form}"


def replicate_changes(db: Database, root: Path, changes: list[tuple[str, Callable[[Database], None]]],
                      images: Images) -> None:
    with Replicator(db.path, root) as replicator:
        for _, change in changes:
            change(db)
            result = replicator.step()
            if result is not None:
                images[result.txid] = db.image()


def reencode(path: Path, header: Callable[[Header], Header], post_apply: int = 0,
             page: Callable[[int, bytes], bytes] = lambda pgno, data: data) -> None:
    """Write ``path`` again with another header, post-apply checksum or page content: a
    consistent file (every LTX checksum right) with what the caller chose inside."""
    with open_ltx(path) as decoder:
        pages = [(pgno, page(pgno, data)) for pgno, data in decoder.pages()]
        old = decoder.header
    temp = path.with_suffix(".rewrite")
    with open(temp, "wb") as out:
        encoder = Encoder(out, header(old))
        for pgno, data in pages:
            encoder.write_page(pgno, data)
        encoder.finish(post_apply)
    os.replace(temp, path)


def to_old_form(replica: Path) -> None:
    """Every file as ltxpool wrote it before: flags 0, pre- and post-apply checksums set
    (taken from the per-TXID record, which holds exactly those)."""
    for path in every_file(replica):
        with open_ltx(path) as decoder:
            first, last = decoder.header.min_txid, decoder.header.max_txid
        post = recorded_checksum(Replica(replica), last)
        pre = 0 if first == 1 else recorded_checksum(Replica(replica), first - 1)
        assert post is not None and pre is not None
        reencode(path, lambda h, pre=pre: replace(h, flags=0, pre_apply_checksum=pre), post)


@pytest.mark.parametrize("mode", ["wal", "delete"])
def test_litestream_restores_every_txid_ltxpool_replicated_as_ltxpool_does(tmp_path: Path, mode: str) -> None:
    db = Database(str(tmp_path / "app.db"), mode)
    root, images = tmp_path / "replica", {}
    replicate_changes(db, root, CHANGES, images)
    db.close()
    assert len(images) >= 8
    assert_litestream_form(root)
    restored = assert_both_restore_every_txid(root, images, tmp_path / "out")
    assert restored == sorted(images), "without compaction or retention every TXID restores"


def test_after_compaction_at_levels_1_2_3_and_9_litestream_restores_as_ltxpool_does(tmp_path: Path) -> None:
    db = Database(str(tmp_path / "app.db"), "wal")
    root, images = tmp_path / "replica", {}
    replica = Replica(root)
    rounds = [CHANGES[:4], CHANGES[4:6], CHANGES[6:8], CHANGES[8:10], CHANGES[10:]]
    for level, changes in zip((1, 2, 3, 9, None), rounds, strict=True):
        replicate_changes(db, root, changes, images)
        if level is None:
            break
        if level == 2:
            compact_level(replica, 1)  # level 2 compacts level 1
        if level == 3:
            compact_level(replica, 1)
            compact_level(replica, 2)
        result = compact_level(replica, level)
        assert result is not None and result.max_txid == max(images), f"level {level} compacted nothing"
        assert_litestream_form(root)
        assert_both_restore_every_txid(root, images, tmp_path / f"out-{level}")
    db.close()
    assert all(replica.list_level(level).files for level in (1, 2, 3, 9))
    assert_both_restore_every_txid(root, images, tmp_path / "out-final")


def test_after_a_page_size_change_litestream_restores_both_generations_as_ltxpool_does(tmp_path: Path) -> None:
    db = Database(str(tmp_path / "app.db"), "delete")
    root, images = tmp_path / "replica", {}
    replicate_changes(db, root, CHANGES[:4], images)
    before = max(images)
    replicate_changes(db, root, [("page size 8192", lambda d: d.change_page_size(8192))], images)
    assert max(images) == before + 1
    replicate_changes(db, root, CHANGES[4:7], images)
    db.close()
    with open_ltx(Replica(root).path_of(9, 1, before + 1)) as decoder:
        assert decoder.header.page_size == 8192, "the new generation starts with a snapshot from TXID 1, at level 9"
    assert_litestream_form(root)
    restored = assert_both_restore_every_txid(root, images, tmp_path / "out")
    assert before in restored and before + 1 in restored
    compact_level(Replica(root), 1)
    compact_level(Replica(root), 9)
    assert_litestream_form(root)
    assert_both_restore_every_txid(root, images, tmp_path / "out-compacted")


def test_after_retention_litestream_restores_what_is_left_as_ltxpool_does(tmp_path: Path) -> None:
    db = Database(str(tmp_path / "app.db"), "wal")
    root, images = tmp_path / "replica", {}
    replica = Replica(root)
    replicate_changes(db, root, CHANGES[:6], images)
    for level in (1, 2, 3, 9):
        compact_level(replica, level)
    replicate_changes(db, root, CHANGES[6:], images)
    db.close()
    policy = RetentionPolicy(level_retention={0: 0.0, 1: 0.0, 2: 0.0, 3: 0.0}, snapshot_retention=0.0)
    report = janitor_pass(replica, JanitorSettings(retention=policy), time.time() + 10)
    assert report.retention_removed > 0
    assert_litestream_form(root)
    restored = assert_both_restore_every_txid(root, images, tmp_path / "out", at_least=3)
    assert restored != sorted(images), "retention removed the files of some TXIDs"


# --- a WAL app committing while replicate steps ------------------------------------------


def payload(seq: int, salt: int) -> bytes:
    return hashlib.sha256(f"{seq}/{salt}".encode()).digest() * (20 + seq % 50)


def expected_rows(seq: int) -> list[tuple[int, bytes]]:
    """The rows of ``items`` after commits 1..seq of :class:`App` (the replay oracle)."""
    rows: dict[int, bytes] = {}
    for n in range(1, seq + 1):
        rows[n] = payload(n, 0)
        if n % 4 == 3:
            rows[n // 2 or 1] = payload(n, 1)
        if n % 10 == 9:
            rows.pop(n - 5, None)
    return sorted(rows.items())


class App(threading.Thread):
    """Commits numbered transactions (``meta.seq`` = its number) until told to stop."""

    def __init__(self, path: str) -> None:
        super().__init__(daemon=True)
        self.path, self.seq, self.stop, self.error = path, 0, threading.Event(), None
        with closing(sqlite3.connect(path)) as conn:
            conn.execute("PRAGMA journal_mode=wal")
            conn.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, body BLOB)")
            conn.execute("CREATE TABLE meta(id INTEGER PRIMARY KEY, seq INTEGER)")
            conn.execute("INSERT INTO meta VALUES (1, 0)")
            conn.commit()

    def run(self) -> None:
        try:
            with closing(sqlite3.connect(self.path, timeout=30)) as conn:
                while not self.stop.is_set():
                    n = self.seq + 1
                    with conn:
                        conn.execute("INSERT INTO items VALUES (?, ?)", (n, payload(n, 0)))
                        if n % 4 == 3:
                            conn.execute("UPDATE items SET body = ? WHERE id = ?", (payload(n, 1), n // 2 or 1))
                        if n % 10 == 9:
                            conn.execute("DELETE FROM items WHERE id = ?", (n - 5,))
                        conn.execute("UPDATE meta SET seq = ?", (n,))
                    self.seq = n
                    if n % 25 == 0:
                        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                    time.sleep(0.002)
        except BaseException as exc:  # raised in the test thread
            self.error = exc


def committed_state(path: Path) -> tuple[int, list[tuple[int, bytes]]]:
    with closing(sqlite3.connect(path)) as conn:
        (seq,) = conn.execute("SELECT seq FROM meta").fetchone()
        return seq, conn.execute("SELECT id, body FROM items ORDER BY id").fetchall()


def test_litestream_restores_a_wal_app_replicated_continuously_as_ltxpool_does(tmp_path: Path) -> None:
    source, root = tmp_path / "app.db", tmp_path / "replica"
    app = App(str(source))
    txids = []
    with Replicator(source, root, pin=True) as replicator:
        app.start()
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            if (result := replicator.step()) is not None:
                txids.append(result.txid)
            time.sleep(0.02)
        app.stop.set()
        app.join()
        assert app.error is None
        if (result := replicator.step()) is not None:
            txids.append(result.txid)
    assert len(txids) >= 20 and app.seq >= 200
    assert_litestream_form(root)
    compact_level(Replica(root), 1)
    sample = sorted({txids[0], *txids[len(txids) // 4 :: len(txids) // 4], txids[-1]})
    assert len(sample) >= 5
    seqs = []
    for txid in sample:
        ours, theirs = tmp_path / f"ours-{txid}.db", tmp_path / f"theirs-{txid}.db"
        result = restore(Replica(root), ours, txid)
        litestream_restore(root, theirs, txid)
        assert result.verified_by == (TXID_RECORD,)
        assert ours.read_bytes() == theirs.read_bytes(), f"TXID {txid}"
        seq, rows = committed_state(ours)
        assert rows == expected_rows(seq), f"TXID {txid} is not the replay of commits 1..{seq}"
        seqs.append(seq)
    assert seqs == sorted(seqs) and seqs[-1] == app.seq, "the latest TXID holds the last commit"


# --- controls ------------------------------------------------------------------------------


def test_control_the_old_form_fails_litestream_and_ltxpool_still_restores_it(tmp_path: Path) -> None:
    db = Database(str(tmp_path / "app.db"), "wal")
    root, images = tmp_path / "replica", {}
    replicate_changes(db, root, CHANGES[:6], images)
    db.close()
    compact_level(Replica(root), 1)
    new_form = assert_both_restore_every_txid(root, images, tmp_path / "new")
    to_old_form(root)
    latest = max(images)
    with pytest.raises(LitestreamError) as failed:
        litestream_restore(root, tmp_path / "theirs.db")
    assert "validate trailer: post-apply checksum not allowed" in failed.value.output
    (root / STATE_DIR / RECORD_NAME).unlink()  # a replica from before the record
    for txid in new_form:
        result = restore(Replica(root), tmp_path / f"ours-{txid}.db", txid)
        assert result.verified_by == (POST_APPLY,)
        assert (tmp_path / f"ours-{txid}.db").read_bytes() == images[txid]
    # A snapshot written now is in Litestream's form, and nothing verifies it...
    compact_level(Replica(root), 9)
    snapshot = Replica(root).path_of(9, 1, latest)
    assert verify_file(snapshot).flags == HEADER_FLAG_NO_CHECKSUM
    assert restore(Replica(root), tmp_path / "unverified.db").verified_by == ()
    # ...until replicate starts and backfills the record from the old files' trailers.
    Replicator(tmp_path / "app.db", root).close()
    result = restore(Replica(root), tmp_path / "verified.db")
    assert result.verified_by == (TXID_RECORD,) and (tmp_path / "verified.db").read_bytes() == images[latest]
    litestream_restore(root, tmp_path / "theirs-snapshot.db")  # the latest TXID: the snapshot alone
    assert (tmp_path / "theirs-snapshot.db").read_bytes() == images[latest]
    for txid in new_form[:-1]:
        result = restore(Replica(root), tmp_path / f"again-{txid}.db", txid)
        assert result.verified_by == (TXID_RECORD, POST_APPLY), txid


def blob_page(image: bytes, page_size: int, marker: bytes) -> int:
    """The number of a page holding the middle of a blob (``marker`` repeated): changing a
    byte there changes a row's content, not the b-tree, so SQLite's integrity check passes."""
    for offset in range(0, len(image), page_size):
        if marker * 64 in image[offset : offset + page_size]:
            return offset // page_size + 1
    raise AssertionError("no page holds the blob")


def test_control_a_consistent_but_wrong_file_is_caught_by_the_txid_record_only(tmp_path: Path) -> None:
    db = Database(str(tmp_path / "app.db"), "wal")
    root, images = tmp_path / "replica", {}
    marker = b"\xa5"
    replicate_changes(db, root, [
        *CHANGES[:2],
        ("a blob", lambda d: d.run("INSERT INTO docs(body) VALUES (?)", rows=[(marker * 20000,)])),
        ("another row", lambda d: d.run("UPDATE docs SET body = x'00' WHERE id = 1")),
    ], images)
    db.close()
    latest = max(images)
    target = blob_page(images[latest], 4096, marker)
    wrong = next(path for path in reversed(replica_ltx_files(root, 0)) if _holds(path, target))

    def flip(pgno: int, data: bytes) -> bytes:
        if pgno != target:
            return data
        middle = data.index(marker * 64) + 32
        return data[:middle] + b"\x5a" + data[middle + 1 :]

    reencode(wrong, lambda h: h, 0, flip)
    verify_file(wrong)  # every LTX checksum is right: the codec cannot tell
    with pytest.raises(CorruptLTXError, match=f"checksum replicate recorded for TXID {latest}"):
        restore(Replica(root), tmp_path / "ours.db")
    assert not (tmp_path / "ours.db").exists()
    litestream_restore(root, tmp_path / "theirs.db")
    assert (tmp_path / "theirs.db").read_bytes() != images[latest], "Litestream restores the wrong page silently"
    # Control: without the record the same restore passes every other check, wrong bytes and all.
    (root / STATE_DIR / RECORD_NAME).unlink()
    result = restore(Replica(root), tmp_path / "unchecked.db")
    assert result.verified_by == ()
    assert (tmp_path / "unchecked.db").read_bytes() == (tmp_path / "theirs.db").read_bytes() != images[latest]


def _holds(path: Path, pgno: int) -> bool:
    with open_ltx(path) as decoder:
        return any(number == pgno for number, _ in decoder.pages())
