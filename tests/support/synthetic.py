"""A synthetic stream of transactions, written as level-0 LTX files, with the expected images.

Each transaction writes random pages, sometimes grows the database and sometimes
shrinks it; the first one is a snapshot. ``image(txid)`` is the database as it must
be restored at that TXID, page for page.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

from ltxpool.locks.dirlock import DirLock
from ltxpool.ltx import (
    CHECKSUM_FLAG,
    HEADER_FLAG_NO_CHECKSUM,
    Encoder,
    Header,
    page_checksum,
)
from ltxpool.replica.atomic import AtomicWriter
from ltxpool.replica.layout import Replica

PAGE_SIZE = 1024


@dataclass
class SyntheticStream:
    replica: Replica
    seed: int = 0
    page_size: int = PAGE_SIZE
    checksums: bool = True
    pages: dict[int, bytes] = field(default_factory=dict)
    commit: int = 0
    txid: int = 0
    images: dict[int, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def _page(self) -> bytes:
        # Partly compressible, like real pages: a random prefix, then a repeated byte.
        head = self.rng.randbytes(self.rng.randrange(8, self.page_size // 2))
        return head + bytes([self.rng.randrange(256)]) * (self.page_size - len(head))

    def _checksum(self) -> int:
        value = CHECKSUM_FLAG
        for pgno in range(1, self.commit + 1):
            value ^= page_checksum(pgno, self.pages[pgno])
        return CHECKSUM_FLAG | value

    def transaction(self, timestamp_ms: int | None = None) -> int:
        """Make one transaction, write it as a level-0 file, return its TXID."""
        pre = self._checksum() if self.txid else 0
        if self.txid == 0:
            new_commit = self.rng.randrange(4, 24)
            changed = set(range(1, new_commit + 1))
        else:
            roll = self.rng.random()
            if roll < 0.15:
                new_commit = max(2, self.commit - self.rng.randrange(1, 4))
            elif roll < 0.4:
                new_commit = self.commit + self.rng.randrange(1, 4)
            else:
                new_commit = self.commit
            changed = set(range(self.commit + 1, new_commit + 1))
            changed |= {self.rng.randrange(1, new_commit + 1) for _ in range(self.rng.randrange(1, 5))}
        for pgno in changed:
            self.pages[pgno] = self._page()
        for pgno in [p for p in self.pages if p > new_commit]:
            del self.pages[pgno]
        self.commit = new_commit
        self.txid += 1
        self.images[self.txid] = b"".join(self.pages[p] for p in range(1, self.commit + 1))
        header = Header(
            flags=0 if self.checksums else HEADER_FLAG_NO_CHECKSUM,
            page_size=self.page_size,
            commit=self.commit,
            min_txid=self.txid,
            max_txid=self.txid,
            timestamp=timestamp_ms if timestamp_ms is not None else int(time.time() * 1000),
            pre_apply_checksum=pre if self.checksums else 0,
            wal_offset=0, wal_size=0, wal_salt1=0, wal_salt2=0, node_id=1,
        )
        directory = self.replica.ensure_level_dir(0)
        with DirLock(directory) as lock, AtomicWriter(self.replica.path_of(0, self.txid, self.txid), lock) as writer:
            encoder = Encoder(writer, header)
            for pgno in sorted(changed):
                if pgno <= self.commit:
                    encoder.write_page(pgno, self.pages[pgno])
            encoder.finish(self._checksum() if self.checksums else 0)
            writer.commit()
        return self.txid

    def run(self, count: int) -> None:
        for _ in range(count):
            self.transaction()
