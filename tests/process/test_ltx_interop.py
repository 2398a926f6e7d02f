"""The codec against the real Litestream 0.5.17, in both directions.

One replica is written by ``litestream replicate`` while a SQLite database keeps
changing, until every level (0, 1, 2, 3 and the level-9 snapshots) holds files. The
codec must verify every one of them, and applying their decoded pages -- the newest
snapshot plus later files, each level's chain, the level-0 chain alone -- must give
the database page for page. The other way, Litestream must restore files written by
``Encoder`` to the same bytes as the database they came from.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest

from ltxpool.ltx import (
    HEADER_FLAG_NO_CHECKSUM,
    PAGE_FLAG_SIZE,
    Encoder,
    Header,
    lock_page,
    open_ltx,
    verify_file,
)
from tests.support.litestream_peer import (
    LitestreamReplicator,
    SQLiteWriter,
    create_wal_database,
    integrity_check,
    litestream_restore,
    replica_ltx_files,
)

LEVELS = (0, 1, 2, 3, 9)


@dataclass(frozen=True)
class Replicated:
    replica: Path
    database: bytes  # the source database file, checkpointed after Litestream stopped
    page_size: int


@pytest.fixture(scope="module")
def replicated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicated]:
    root = tmp_path_factory.mktemp("interop")
    source, replica = root / "source.db", root / "replica"
    create_wal_database(source)
    # l0_retention 0: Litestream keeps every level-0 file, so the L0 chain starts at TXID 1.
    with LitestreamReplicator(source, replica, root / "litestream", l0_retention=0.0) as litestream:
        with SQLiteWriter(source, period=0.005, payload_size=700):
            for level in LEVELS[1:]:
                litestream.wait_for_files(level, timeout=25)
            time.sleep(0.5)  # a few more transactions after the last snapshot
    with closing(sqlite3.connect(source)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    yield Replicated(replica, source.read_bytes(), page_size)


def database_pages(image: bytes, page_size: int) -> dict[int, bytes]:
    lock = lock_page(page_size)
    return {
        n // page_size + 1: image[n : n + page_size]
        for n in range(0, len(image), page_size)
        if n // page_size + 1 != lock
    }


def apply(paths: Iterable[Path]) -> tuple[dict[int, bytes], int]:
    """Pages after applying the files in order (newest page wins, truncate to commit); last TXID."""
    pages: dict[int, bytes] = {}
    txid = 0
    for path in paths:
        with open_ltx(path, verify_index=True) as decoder:
            header = decoder.header
            assert header.min_txid <= txid + 1, f"{path.name} leaves a gap after TXID {txid}"
            pages.update(decoder.pages())
            assert decoder.trailer is not None
        pages = {pgno: data for pgno, data in pages.items() if pgno <= header.commit}
        txid = header.max_txid
    return pages, txid


def chain(levels: Iterable[int], replica: Path, after: int) -> list[Path]:
    """Files continuing TXID ``after``: at each step the one reaching furthest, higher levels first."""
    candidates = [(level, path) for level in levels for path in replica_ltx_files(replica, level)]
    picked: list[Path] = []
    while True:
        following = [
            (int(path.name[17:33], 16), -level, path)
            for level, path in candidates
            if int(path.name[:16], 16) == after + 1
        ]
        if not following:
            return picked
        after, _, path = max(following)
        picked.append(path)


def newest_txid(replica: Path) -> int:
    return max(int(path.name[17:33], 16) for path in replica_ltx_files(replica, 0))


def test_every_file_litestream_wrote_verifies_at_every_level(replicated: Replicated) -> None:
    for level in LEVELS:
        files = replica_ltx_files(replicated.replica, level)
        assert files, f"Litestream wrote no level-{level} file"
        for path in files:
            header = verify_file(path)
            assert header.flags == HEADER_FLAG_NO_CHECKSUM and header.page_size == replicated.page_size
            assert header.is_snapshot or level != 9
            with open_ltx(path) as decoder:
                assert all(frame.flags == PAGE_FLAG_SIZE for frame in decoder.frames())
                assert decoder.trailer is not None and decoder.trailer.post_apply_checksum == 0


def test_random_access_reads_the_same_pages_as_streaming(replicated: Replicated) -> None:
    for level in LEVELS:
        for path in replica_ltx_files(replicated.replica, level)[-2:]:
            with open_ltx(path) as decoder:
                streamed = dict(decoder.pages())
                assert all(decoder.read_page(pgno) == data for pgno, data in streamed.items())
                assert decoder.read_page(decoder.header.commit + 1) is None


def test_the_replica_spans_many_transactions_and_pages(replicated: Replicated) -> None:
    assert newest_txid(replicated.replica) >= 10
    assert len(replicated.database) // replicated.page_size > 20
    assert len(replica_ltx_files(replicated.replica, 9)) >= 1


def test_newest_snapshot_plus_later_files_give_the_database(replicated: Replicated) -> None:
    snapshot = replica_ltx_files(replicated.replica, 9)[-1]
    assert snapshot.name.startswith("0000000000000001-")
    rest = chain((3, 2, 1, 0), replicated.replica, int(snapshot.name[17:33], 16))
    pages, txid = apply([snapshot, *rest])
    assert txid == newest_txid(replicated.replica)
    assert pages == database_pages(replicated.database, replicated.page_size)


@pytest.mark.parametrize("level", [0, 1, 2, 3])
def test_each_level_chain_from_the_first_transaction_gives_the_database(replicated: Replicated, level: int) -> None:
    files = chain((level,), replicated.replica, 0)
    assert files, f"no level-{level} file starts at TXID 1"
    files += chain((0,), replicated.replica, int(files[-1].name[17:33], 16))
    pages, txid = apply(files)
    assert txid == newest_txid(replicated.replica)
    assert pages == database_pages(replicated.database, replicated.page_size)


def write_ltx(path: Path, header: Header, pages: dict[int, bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        encoder = Encoder(out, header)
        for pgno in sorted(pages):
            encoder.write_page(pgno, pages[pgno])
        encoder.finish()


def test_litestream_restores_what_the_encoder_wrote(tmp_path: Path) -> None:
    source = tmp_path / "source.db"
    create_wal_database(source)
    versions: list[bytes] = []
    with closing(sqlite3.connect(source)) as conn:
        for round_ in range(3):
            with conn:
                for n in range(40 * (round_ + 1)):
                    conn.execute("INSERT INTO items (payload) VALUES (?)", (bytes([n % 256]) * (200 + 37 * n),))
                conn.execute("DELETE FROM items WHERE id % 7 = ?", (round_,))
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            versions.append(source.read_bytes())
        (page_size,) = conn.execute("PRAGMA page_size").fetchone()

    replica = tmp_path / "replica"
    flags, previous = HEADER_FLAG_NO_CHECKSUM, {}
    for txid, image in enumerate(versions, 1):
        pages = database_pages(image, page_size)
        commit = len(image) // page_size
        if txid == 1:
            header = Header(flags=flags, page_size=page_size, commit=commit, min_txid=1, max_txid=1, timestamp=1000)
            write_ltx(replica / "ltx" / "9" / f"{1:016x}-{1:016x}.ltx", header, pages)
        else:
            changed = {pgno: data for pgno, data in pages.items() if previous.get(pgno) != data}
            header = Header(flags=flags, page_size=page_size, commit=commit, min_txid=txid, max_txid=txid,
                            timestamp=1000 + txid)  # fmt: skip
            write_ltx(replica / "ltx" / "0" / f"{txid:016x}-{txid:016x}.ltx", header, changed)
        previous = pages

    latest, earlier = tmp_path / "latest.db", tmp_path / "earlier.db"
    litestream_restore(replica, latest)
    litestream_restore(replica, earlier, txid=2)
    assert latest.read_bytes() == versions[-1]
    assert earlier.read_bytes() == versions[1]
    assert integrity_check(latest) == "ok"
