"""A SQLite database driven through many kinds of change, and its exact page image.

The oracle is ``Connection.serialize()``: SQLite reads every page through its own
pager (WAL included), so the bytes are exactly the database a reader sees. The
backup API is no oracle for page-for-page equality: it bumps the destination's
change counter (header bytes 24-27 and 92-95).
"""

from __future__ import annotations

import os
import random
import sqlite3
from collections.abc import Callable

__all__ = ["Database", "CHANGES", "restored_bytes"]


class Database:
    """The test's own connection to a database in ``mode`` (``wal`` or ``delete``)."""

    def __init__(self, path: str, mode: str, page_size: int = 4096) -> None:
        self.path = path
        self.mode = mode
        self.conn = sqlite3.connect(path, isolation_level=None, timeout=30)
        self.conn.execute(f"PRAGMA page_size={page_size}")
        self.conn.execute(f"PRAGMA journal_mode={mode}")
        self.rng = random.Random(7)

    def image(self) -> bytes:
        return self.conn.serialize()

    def run(self, *statements: str, rows: list[tuple[object, ...]] | None = None) -> None:
        self.conn.execute("BEGIN")
        for sql in statements:
            if rows is not None and "?" in sql:
                self.conn.executemany(sql, rows)
            else:
                self.conn.execute(sql)
        self.conn.execute("COMMIT")

    def blobs(self, count: int, low: int, high: int) -> list[tuple[object, ...]]:
        return [(self.rng.randbytes(self.rng.randint(low, high)),) for _ in range(count)]

    def change_page_size(self, page_size: int) -> None:
        """Only possible outside WAL mode; the caller closes other connections first."""
        if self.mode == "wal":
            self.conn.execute("PRAGMA journal_mode=delete")
        self.conn.execute(f"PRAGMA page_size={page_size}")
        self.conn.execute("VACUUM")
        if self.mode == "wal":
            self.conn.execute("PRAGMA journal_mode=wal")

    def close(self) -> None:
        self.conn.close()


def _create(db: Database) -> None:
    db.run("CREATE TABLE docs(id INTEGER PRIMARY KEY, body BLOB, tag TEXT)",
           "CREATE TABLE log(id INTEGER PRIMARY KEY, line TEXT)")


def _insert(db: Database) -> None:
    db.run("INSERT INTO docs(body) VALUES (?)", rows=db.blobs(300, 20, 700))


def _overflow(db: Database) -> None:
    db.run("INSERT INTO docs(body) VALUES (?)", rows=db.blobs(12, 9000, 30000))


def _update(db: Database) -> None:
    db.run("UPDATE docs SET tag = printf('t%d', id % 17), body = randomblob(length(body)) WHERE id % 5 = 0")


def _index(db: Database) -> None:
    db.run("CREATE INDEX docs_tag ON docs(tag)")


def _delete(db: Database) -> None:
    db.run("DELETE FROM docs WHERE id % 3 = 0")


def _vacuum(db: Database) -> None:
    db.conn.execute("VACUUM")


def _drop_and_vacuum(db: Database) -> None:
    db.run("INSERT INTO log(line) VALUES (?)", rows=[(f"line {i}" * 20,) for i in range(400)])
    db.run("DROP TABLE log")
    db.conn.execute("VACUUM")


def _grow(db: Database) -> None:
    for _ in range(3):
        db.run("INSERT INTO docs(body) VALUES (?)", rows=db.blobs(200, 100, 2000))


def _rewrite_same(db: Database) -> None:
    db.run("UPDATE docs SET tag = tag WHERE id < 50")


CHANGES: list[tuple[str, Callable[[Database], None]]] = [
    ("create tables", _create),
    ("insert rows", _insert),
    ("insert overflow blobs", _overflow),
    ("update rows", _update),
    ("create index", _index),
    ("delete rows", _delete),
    ("vacuum (page count shrinks)", _vacuum),
    ("grow in several transactions", _grow),
    ("drop table and vacuum", _drop_and_vacuum),
    ("rewrite rows unchanged", _rewrite_same),
    ("insert after rewrite", _insert),
]


def restored_bytes(path: str | os.PathLike[str]) -> bytes:
    with open(path, "rb") as f:
        return f.read()
