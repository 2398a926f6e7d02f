"""An application that commits numbered transactions from real processes, and its replay oracle.

The application (run as ``python -m tests.support.app_oracle COMMAND ...``, a real process of
``sys.executable`` with the repo root as cwd):

* ``create DB``: a new database (the old files removed first, or overwritten in
  place with ``--in-place``) holding ``meta(generation, seed, first_seq, seq)``,
  ``items`` and ``txlog``.
* ``write DB``: one or more transactions in one process. Each one is
  ``BEGIN IMMEDIATE``; read ``seq`` and ``generation`` from ``meta`` and increment
  ``seq`` -- inside the transaction, so the number is the commit order; apply the
  operations of :func:`apply` derived from (generation, seed, seq, kind); log
  ``(seq, kind)`` in ``txlog``; ``COMMIT`` (or ``ROLLBACK``: that number is then
  taken again by the next commit, and the rolled-back operations must appear
  nowhere). One line per transaction on stdout: ``commit G S KIND`` or
  ``rollback G S KIND``. Then the process closes its connection: when it was the
  last one, SQLite checkpoints and deletes ``-wal`` and ``-shm`` (WAL mode).
* ``maintain DB ACTION...``: VACUUM, checkpoints of every kind, journal-mode
  switches, page-size changes -- the database's pages change, its rows do not.
* ``serve DB``: a long-lived application process that keeps its connection open
  and runs the commands it reads from stdin (``tx KIND``, ``rollback KIND``,
  ``do ACTION``), answering each with one line.

The oracle (:class:`Oracle`): given a restored database, read its ``generation``
and ``seq``, rebuild the expected database by replaying, into a fresh in-memory
database, exactly the transactions ``first_seq+1 .. seq`` of that generation
(their kinds come from the writers' own ``commit`` lines, the ledger), and compare
every row of every table (meta, items, txlog) and the schema -- not only
``integrity_check``. A replica that missed a commit, or mixes pages of different
moments, restores a database whose rows are not the replay of what it claims.

:func:`audit` puts it together for a replica: restore (``ltxpool restore --txid``)
the latest TXID and a sample of earlier ones, check each with the oracle (and
against the state the test saw at the step that wrote it), ``--compare`` the
latest with the database, and check that ``ltxpool verify`` agrees with restore.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Self

__all__ = [
    "KINDS",
    "App",
    "Oracle",
    "OracleMismatch",
    "Session",
    "Steps",
    "api_once",
    "apply",
    "audit",
    "cli_once",
    "replica_txids",
]

# The folder that holds the ``tests`` package: the app runs as ``python -m tests.support.app_oracle``
# from there. (Only the test package is found this way; ltxpool is always the installed one.)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KINDS = ("small", "grow", "shrink", "spill", "huge")
# Row ids: seq * ID_STRIDE + k, so every transaction's rows are its own and deterministic.
ID_STRIDE = 10_000
HUGE_BYTES = 60 << 20
SPILL_BYTES = 8 << 20
HUGE_ROW = 30_000

SCHEMA = (
    ("CREATE TABLE meta(id INTEGER PRIMARY KEY CHECK (id = 1), generation INTEGER NOT NULL,"
     " seed INTEGER NOT NULL, first_seq INTEGER NOT NULL, seq INTEGER NOT NULL)"),
    "CREATE TABLE items(id INTEGER PRIMARY KEY, txn INTEGER NOT NULL, note TEXT NOT NULL, body BLOB NOT NULL)",
    "CREATE TABLE txlog(seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, inserted INTEGER NOT NULL)",
    "CREATE INDEX items_txn ON items(txn)",
)
TABLES = {"meta": "id", "items": "id", "txlog": "seq"}


# -- the operations of one transaction ------------------------------------------------

def choose_kind(seed: int, seq: int) -> str:
    """``auto``: mostly small transactions, now and then a growth or a shrink (not of the generation,
    so that a re-created database with the same seed has the same shape)."""
    roll = random.Random(f"kind/{seed}/{seq}").random()
    return "grow" if roll < 0.15 else "shrink" if roll < 0.27 else "small"


def apply(conn: sqlite3.Connection, generation: int, seed: int, seq: int, kind: str, *, doomed: bool = False) -> int:
    """The operations of transaction ``seq`` (inside the caller's transaction); returns rows inserted.

    Sizes and the rows touched depend on (seed, seq, kind) only; the bytes also on the
    generation (and on ``doomed``: a rolled-back transaction writes bytes no commit has).
    The caller's database must be the replay of transactions up to ``seq - 1``: the
    updates and deletes select their rows from it.
    """
    shape = random.Random(f"shape/{seed}/{seq}/{kind}")
    content = random.Random(f"bytes/{generation}/{seed}/{seq}/{kind}/{int(doomed)}")
    tag = "doomed" if doomed else "t"
    base = seq * ID_STRIDE

    def blob(low: int, high: int) -> bytes:
        return content.randbytes(shape.randint(low, high))

    if kind == "small":
        rows = [(base + k, seq, f"{tag}{seq}.{k}", blob(40, 1500)) for k in range(shape.randint(2, 8))]
    elif kind == "grow":
        rows = [(base + k, seq, f"{tag}{seq}.{k}", blob(1000, 4000)) for k in range(shape.randint(250, 350))]
    elif kind == "shrink":
        rows = [(base, seq, f"{tag}{seq}.0", blob(40, 400))]
    elif kind in ("huge", "spill"):
        total = HUGE_BYTES if kind == "huge" else SPILL_BYTES
        rows = [(base + k, seq, f"{tag}{seq}.{k}", content.randbytes(HUGE_ROW)) for k in range(total // HUGE_ROW + 1)]
    else:
        raise ValueError(f"unknown transaction kind {kind!r}")
    conn.executemany("INSERT INTO items(id, txn, note, body) VALUES (?, ?, ?, ?)", rows)
    if kind == "shrink":
        # Most rows go: with auto_vacuum=full the file shrinks at this commit.
        conn.execute("DELETE FROM items WHERE txn < ? AND id % 4 != ?", (seq, seq % 4))
    elif kind in ("small", "grow"):
        modulus = shape.choice((3, 5, 7))
        ids = [r[0] for r in conn.execute(
            "SELECT id FROM items WHERE txn < ? AND id % ? = ? ORDER BY id LIMIT 40", (seq, modulus, seq % modulus))]
        for row_id in ids:
            conn.execute("UPDATE items SET note = ?, body = ? WHERE id = ?", (f"{tag}u{seq}", blob(40, 2000), row_id))
        conn.execute("DELETE FROM items WHERE txn < ? - 2 AND id % 13 = ?", (seq, seq % 13))
    conn.execute("INSERT INTO txlog(seq, kind, inserted) VALUES (?, ?, ?)", (seq, f"{tag}:{kind}", len(rows)))
    return len(rows)


def create_schema(conn: sqlite3.Connection, generation: int, seed: int, first_seq: int) -> None:
    conn.execute("BEGIN")
    for sql in SCHEMA:
        conn.execute(sql)
    conn.execute("INSERT INTO meta(id, generation, seed, first_seq, seq) VALUES (1, ?, ?, ?, ?)",
                 (generation, seed, first_seq, first_seq))
    conn.execute("COMMIT")


# -- the application's processes ------------------------------------------------------

def _connect(path: str) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None, timeout=60)


def _remove_files(path: str) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        try:
            os.remove(path + suffix)
        except FileNotFoundError:
            pass


def _create(path: str, generation: int, seed: int, first_seq: int, mode: str, page_size: int,
            auto_vacuum: str, in_place: bool) -> None:
    target = path
    if in_place:
        # Build the new database beside it, then overwrite the old file's bytes: same
        # path, same inode (as ``cp new.db app.db`` does).
        target = os.path.join(os.path.dirname(path), f".new-{os.getpid()}.db")
        _remove_files(target)
    else:
        _remove_files(path)
    conn = _connect(target)
    conn.execute(f"PRAGMA page_size={page_size}")
    conn.execute(f"PRAGMA auto_vacuum={auto_vacuum}")
    conn.execute(f"PRAGMA journal_mode={'delete' if in_place else mode}")
    create_schema(conn, generation, seed, first_seq)
    conn.close()
    if in_place:
        for suffix in ("-wal", "-shm", "-journal"):
            try:
                os.remove(path + suffix)
            except FileNotFoundError:
                pass
        with open(target, "rb") as new, open(path, "r+b" if os.path.exists(path) else "wb") as old:
            data = new.read()
            old.seek(0)
            old.write(data)
            old.truncate(len(data))
            old.flush()
            os.fsync(old.fileno())
        _remove_files(target)
        if mode != "delete":
            conn = _connect(path)
            conn.execute(f"PRAGMA journal_mode={mode}")
            conn.close()


def transaction(conn: sqlite3.Connection, kind: str, *, rollback: bool = False) -> tuple[str, int, int, str]:
    """One numbered transaction on the application's connection: ``(verb, generation, seq, kind)``."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        generation, seed, seq = conn.execute("SELECT generation, seed, seq FROM meta WHERE id = 1").fetchone()
        seq += 1
        conn.execute("UPDATE meta SET seq = ? WHERE id = 1", (seq,))
        resolved = choose_kind(seed, seq) if kind == "auto" else kind
        apply(conn, generation, seed, seq, resolved, doomed=rollback)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("ROLLBACK" if rollback else "COMMIT")
    return ("rollback" if rollback else "commit"), generation, seq, resolved


def maintain(conn: sqlite3.Connection, action: str) -> str:
    """A change of pages, not of rows; returns what SQLite answered."""
    if action == "vacuum":
        conn.execute("VACUUM")
        return "ok"
    if action.startswith("checkpoint-"):
        row = conn.execute(f"PRAGMA wal_checkpoint({action.split('-', 1)[1].upper()})").fetchone()
        return " ".join(map(str, row))
    if action.startswith("journal-"):
        mode = conn.execute(f"PRAGMA journal_mode={action.split('-', 1)[1]}").fetchone()[0]
        if mode != action.split("-", 1)[1]:
            raise RuntimeError(f"journal_mode stayed {mode}")
        return str(mode)
    if action.startswith("page-size-"):
        size = int(action.rsplit("-", 1)[1])
        mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0])
        if mode == "wal":
            conn.execute("PRAGMA journal_mode=delete")
        conn.execute(f"PRAGMA page_size={size}")
        conn.execute("VACUUM")
        if mode == "wal":
            conn.execute("PRAGMA journal_mode=wal")
        got = int(conn.execute("PRAGMA page_size").fetchone()[0])
        if got != size:
            raise RuntimeError(f"page size stayed {got}")
        return str(got)
    raise ValueError(f"unknown action {action!r}")


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.app_oracle")
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create")
    create.add_argument("db")
    create.add_argument("--generation", type=int, required=True)
    create.add_argument("--seed", type=int, required=True)
    create.add_argument("--first-seq", type=int, default=0)
    create.add_argument("--mode", default="wal")
    create.add_argument("--page-size", type=int, default=4096)
    create.add_argument("--auto-vacuum", default="none")
    create.add_argument("--in-place", action="store_true")
    write = commands.add_parser("write")
    write.add_argument("db")
    write.add_argument("kinds", nargs="+", help="KIND or rollback:KIND, one per transaction")
    write.add_argument("--cache-size", type=int, default=None)
    write.add_argument("--pause", type=float, default=0.0, help="seconds between transactions")
    do = commands.add_parser("maintain")
    do.add_argument("db")
    do.add_argument("actions", nargs="+")
    serve = commands.add_parser("serve")
    serve.add_argument("db")
    args = parser.parse_args(argv)
    if args.command == "create":
        _create(args.db, args.generation, args.seed, args.first_seq, args.mode, args.page_size,
                args.auto_vacuum, args.in_place)
        print("created", flush=True)
        return 0
    conn = _connect(args.db)
    try:
        if args.command == "write":
            if args.cache_size is not None:
                conn.execute(f"PRAGMA cache_size={args.cache_size}")
            for index, spec in enumerate(args.kinds):
                if index and args.pause:
                    time.sleep(args.pause)
                doomed, _, kind = spec.rpartition(":")
                print(*transaction(conn, kind, rollback=doomed == "rollback"), flush=True)
        elif args.command == "maintain":
            for action in args.actions:
                print(action, maintain(conn, action), flush=True)
        else:
            print("ready", flush=True)
            for line in sys.stdin:
                verb, _, what = line.strip().partition(" ")
                try:
                    if verb == "tx":
                        print(*transaction(conn, what), flush=True)
                    elif verb == "rollback":
                        print(*transaction(conn, what, rollback=True), flush=True)
                    elif verb == "do":
                        print(what, maintain(conn, what), flush=True)
                    elif verb == "quit":
                        break
                    else:
                        raise ValueError(f"unknown command {line!r}")
                except Exception as exc:  # noqa: BLE001 -- reported to the test, which fails
                    print("error", type(exc).__name__, str(exc).replace("\n", " "), flush=True)
    finally:
        conn.close()
    return 0


# -- the test side ----------------------------------------------------------------------

def _child(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.support.app_oracle", *args], check=False, capture_output=True, text=True,
        timeout=timeout, cwd=ROOT,
    )


@dataclass
class Generation:
    """One life of the database at the path: created with ``first_seq``, then commits."""

    number: int
    seed: int
    first_seq: int
    kinds: dict[int, str] = field(default_factory=dict)

    @property
    def seq(self) -> int:
        return max(self.kinds, default=self.first_seq)


class App:
    """The application as the test sees it: every call is real processes; the ledger is what they committed."""

    def __init__(self, path: str, *, seed: int = 1, mode: str = "wal", page_size: int = 4096,
                 auto_vacuum: str = "none") -> None:
        self.path, self.seed, self.mode = path, seed, mode
        self.page_size, self.auto_vacuum = page_size, auto_vacuum
        self.generations: dict[int, Generation] = {}
        self.rolled_back = 0

    # the state the database is in now (no writer running)
    @property
    def generation(self) -> int:
        return max(self.generations, default=0)

    @property
    def state(self) -> tuple[int, int]:
        return self.generation, self.generations[self.generation].seq

    def create(self, *, first_seq: int | None = None, in_place: bool = False, seed: int | None = None) -> None:
        """A new generation at the same path (removing the old files, or overwriting in place)."""
        number = self.generation + 1
        first = (self.state[1] if self.generations else 0) if first_seq is None else first_seq
        if seed is not None:
            self.seed = seed
        result = _child("create", self.path, "--generation", str(number), "--seed", str(self.seed),
                        "--first-seq", str(first), "--mode", self.mode, "--page-size", str(self.page_size),
                        "--auto-vacuum", self.auto_vacuum, *(["--in-place"] if in_place else []))
        assert result.returncode == 0, result.stderr
        self.generations[number] = Generation(number, self.seed, first)

    def record(self, lines: Iterable[str]) -> list[int]:
        """Take the writers' ``commit``/``rollback`` lines into the ledger; the seqs committed."""
        committed = []
        for line in lines:
            words = line.split()
            if not words:
                continue
            if words[0] == "error":
                raise AssertionError(f"application error: {line}")
            if words[0] not in ("commit", "rollback"):
                continue
            verb, generation, seq, kind = words[0], int(words[1]), int(words[2]), words[3]
            if verb == "rollback":
                self.rolled_back += 1
                continue
            known = self.generations[generation].kinds
            assert seq not in known, f"seq {seq} of generation {generation} committed twice"
            known[seq] = kind
            committed.append(seq)
        return committed

    def write(self, *kinds: str, cache_size: int | None = None, pause: float = 0.0, timeout: float = 120) -> list[int]:
        """Transactions in ONE process (one short-lived writer; several kinds: a longer-lived one).
        A kind ``rollback:KIND`` rolls back instead of committing."""
        extra = [] if cache_size is None else ["--cache-size", str(cache_size)]
        result = _child("write", self.path, *(kinds or ("auto",)), *extra, "--pause", str(pause), timeout=timeout)
        assert result.returncode == 0, result.stderr
        return self.record(result.stdout.splitlines())

    def writer(self, *kinds: str, pause: float = 0.0, log: str) -> subprocess.Popen[str]:
        """A writer running in the background (stdout to ``log``); :meth:`collect` it when done."""
        with open(log, "w") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "tests.support.app_oracle", "write", self.path, *kinds, "--pause", str(pause)],
                stdout=out, stderr=subprocess.PIPE, text=True, cwd=ROOT,
            )

    def collect(self, process: subprocess.Popen[str], log: str, timeout: float = 120) -> list[int]:
        _, err = process.communicate(timeout=timeout)
        assert process.returncode == 0, err
        with open(log) as f:
            return self.record(f.read().splitlines())

    def maintain(self, *actions: str) -> list[str]:
        result = _child("maintain", self.path, *actions)
        assert result.returncode == 0, result.stderr
        return result.stdout.splitlines()

    def session(self) -> Session:
        return Session(self)

    def oracle(self) -> Oracle:
        return Oracle(self)


class Session:
    """A long-lived application process holding its connection open (so the WAL stays)."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.app_oracle", "serve", app.path],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd=ROOT,
        )
        assert self._line() == "ready"

    def _line(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            assert self.process.stderr is not None
            raise AssertionError(f"application session died: {self.process.stderr.read()}")
        return line.strip()

    def _ask(self, command: str) -> str:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        answer = self._line()
        if answer.startswith("error"):
            raise AssertionError(f"{command}: {answer}")
        return answer

    def tx(self, kind: str = "auto") -> int:
        return self.app.record([self._ask(f"tx {kind}")])[0]

    def rollback(self, kind: str = "small") -> None:
        self.app.record([self._ask(f"rollback {kind}")])

    def do(self, action: str) -> str:
        return self._ask(f"do {action}")

    def close(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.write("quit\n")
            self.process.stdin.close()
            self.process.wait(30)
        assert self.process.returncode == 0, self.process.stderr.read() if self.process.stderr else ""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
            return
        self.close()


# -- the oracle --------------------------------------------------------------------------

class OracleMismatch(AssertionError):
    """A restored database is not the replay of the transactions it claims."""


@dataclass(frozen=True)
class Contents:
    """Every row of every table, as a hash per primary key, and the schema."""

    schema: tuple[tuple[str, str], ...]
    tables: dict[str, dict[int, str]]

    @classmethod
    def read(cls, conn: sqlite3.Connection) -> Contents:
        schema = tuple(conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name").fetchall())
        tables = {}
        for table, key in TABLES.items():
            rows = {}
            for row in conn.execute(f"SELECT * FROM {table} ORDER BY {key}"):
                rows[row[0]] = hashlib.sha1(repr(row).encode()).hexdigest()
            tables[table] = rows
        return cls(schema, tables)

    def differences(self, expected: Contents) -> list[str]:
        found = []
        if self.schema != expected.schema:
            found.append(f"schema differs: {self.schema} != {expected.schema}")
        for table, rows in expected.tables.items():
            got = self.tables.get(table, {})
            missing = sorted(set(rows) - set(got))
            extra = sorted(set(got) - set(rows))
            changed = sorted(k for k in set(rows) & set(got) if rows[k] != got[k])
            if missing or extra or changed:
                found.append(
                    f"{table}: {len(got)} rows, expected {len(rows)}; {len(missing)} missing {missing[:5]}, "
                    f"{len(extra)} unexpected {extra[:5]}, {len(changed)} differ {changed[:5]}")
        return found


class Oracle:
    """Replays the ledger of ``app`` into in-memory databases; checks restored databases against it."""

    def __init__(self, app: App) -> None:
        self.app = app
        self._replays: dict[int, tuple[sqlite3.Connection, int]] = {}
        self._expected: dict[tuple[int, int], Contents] = {}

    def expected(self, generation: int, seq: int) -> Contents:
        """The database after transactions ``first_seq+1 .. seq`` of ``generation``, replayed."""
        key = (generation, seq)
        if key in self._expected:
            return self._expected[key]
        life = self.app.generations.get(generation)
        if life is None:
            raise OracleMismatch(f"generation {generation} was never created")
        if not life.first_seq <= seq <= life.seq:
            raise OracleMismatch(
                f"seq {seq} of generation {generation} was never committed (it went from {life.first_seq} to {life.seq})")
        conn, at = self._replays.get(generation, (None, -1))
        if conn is None or at > seq:
            if conn is not None:
                conn.close()
            conn = sqlite3.connect(":memory:", isolation_level=None)
            conn.execute(f"PRAGMA page_size={self.app.page_size}")
            create_schema(conn, generation, life.seed, life.first_seq)
            at = life.first_seq
        for number in range(at + 1, seq + 1):
            kind = life.kinds.get(number)
            if kind is None:
                raise OracleMismatch(f"generation {generation} has no committed transaction {number}")
            conn.execute("BEGIN")
            conn.execute("UPDATE meta SET seq = ? WHERE id = 1", (number,))
            apply(conn, generation, life.seed, number, kind)
            conn.execute("COMMIT")
        self._replays[generation] = (conn, seq)
        contents = Contents.read(conn)
        if len(self._expected) > 64:
            self._expected.clear()
        self._expected[key] = contents
        return contents

    def check(self, path: str) -> tuple[int, int]:
        """Raise :class:`OracleMismatch` unless ``path`` is exactly the replay of what it claims;
        return the (generation, seq) it claims."""
        uri = "file:" + os.path.abspath(path) + "?mode=ro&immutable=1"
        try:
            conn = sqlite3.connect(uri, uri=True)
            try:
                generation, seed, seq = conn.execute("SELECT generation, seed, seq FROM meta WHERE id = 1").fetchone()
                got = Contents.read(conn)
            finally:
                conn.close()
        except (sqlite3.Error, TypeError) as exc:
            raise OracleMismatch(f"{path}: unreadable: {exc}") from exc
        life = self.app.generations.get(generation)
        if life is not None and seed != life.seed:
            raise OracleMismatch(f"{path}: generation {generation} has seed {seed}, the application used {life.seed}")
        problems = got.differences(self.expected(generation, seq))
        if problems:
            raise OracleMismatch(f"{path} claims generation {generation} seq {seq} but: " + "; ".join(problems))
        return generation, seq


# -- replicate steps and the audit of a replica --------------------------------------------

def _ltxpool(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """The command line in a real process (``tests.support.helpers.run_ltxpool``, imported here so
    that the application's processes never import the product)."""
    from tests.support.helpers import run_ltxpool

    return run_ltxpool(*args, timeout=timeout, cwd=ROOT)


def replica_txids(root: str) -> list[int]:
    """Every TXID the replica claims: 1 .. the highest max TXID of any file at any level."""
    from ltxpool.replica import Replica

    if not os.path.isdir(os.path.join(root, "ltx")):
        return []
    listings = Replica(root).list_all()
    top = max((f.max_txid for listing in listings.values() for f in listing.files), default=0)
    return list(range(1, top + 1))


def cli_once(db: str, root: str) -> int:
    """``ltxpool replicate DB REPLICA --once`` in a real process; the replica's TXID after it."""
    result = _ltxpool("replicate", db, root, "--once")
    assert result.returncode == 0, f"replicate --once failed: {result.stderr}"
    words = result.stdout.split()
    if result.stdout.startswith("no change since txid "):
        return int(words[4])
    assert words[0] == "txid", result.stdout
    return int(words[1].rstrip(":"))


def api_once(db: str, root: str, **options: object) -> int:
    """A fresh ``Replicator`` for one step, then closed: what a new ``--once`` process does."""
    from ltxpool.replicate import Replicator

    with Replicator(db, root, **options) as replicator:  # type: ignore[arg-type]
        replicator.step()
        return replicator.state.txid


class Steps:
    """Replicate steps between the application's runs, and what the database was at each."""

    def __init__(self, app: App, root: str, step=None) -> None:  # type: ignore[no-untyped-def]
        self.app, self.root = app, root
        self.step = step or cli_once
        self.claims: dict[int, tuple[int, int]] = {}
        self.problems: list[str] = []

    def __call__(self) -> int:
        """One step with no application process running: the TXID it leaves must hold the state now."""
        txid = self.step(self.app.path, self.root)
        now = self.app.state
        seen = self.claims.setdefault(txid, now)
        if seen != now:
            self.problems.append(
                f"the step at generation/seq {now} left the replica at TXID {txid}, which captured {seen}: "
                f"the commits in between were missed (\"no change\")")
        return txid


def _sample(txids: list[int], count: int, must: Iterable[int]) -> list[int]:
    if not txids:
        return []
    chosen = {t for t in must if t in txids}
    chosen.add(txids[-1])
    if count > 0 and len(txids) > 1:
        step = max(1, (len(txids) - 1) / count)
        chosen.update(txids[min(len(txids) - 1, int(i * step))] for i in range(count))
    return sorted(chosen)


def _verify_has_all() -> bool:
    return "--all" in _ltxpool("verify", "--help").stdout


def audit(app: App, root: str, scratch: str, *, claims: dict[int, tuple[int, int]] | None = None,
          sample: int = 4, must: Iterable[int] = (), compare: bool = True, first_only: bool = False) -> list[str]:
    """Every problem found in ``root`` (empty: the replica holds exactly what was committed).

    The latest TXID and a sample of earlier ones (plus ``must`` and every TXID of
    ``claims``) are restored with ``ltxpool restore --txid``; each must be the replay of
    the transactions it claims, hold the state the test saw when it was written
    (``claims``), and no TXID may hold an older state than one before it. The latest
    must hold the database as it is now, ``--compare`` equal. ``ltxpool verify`` must
    pass exactly when the latest TXID restores (and ``--all`` fail when any does not).
    """
    oracle = app.oracle()
    problems: list[str] = []
    txids = replica_txids(root)
    if not txids:
        return ["the replica holds no TXID"]
    work = tempfile.mkdtemp(prefix="audit-", dir=scratch)
    try:
        failed: list[int] = []
        previous: tuple[tuple[int, int], int] | None = None
        chosen = _sample(txids, sample, [*(claims or {}), *must])
        if first_only:
            chosen = chosen[-1:] + chosen[:-1]
        for txid in chosen:
            if first_only and problems:
                return problems
            out = os.path.join(work, f"at-{txid}.db")
            latest = txid == txids[-1]
            args = ["restore", root, out, "--txid", str(txid)]
            if latest and compare:
                args += ["--compare", app.path]
            result = _ltxpool(*args)
            if result.returncode != 0 and not os.path.exists(out):
                failed.append(txid)
                problems.append(f"TXID {txid} does not restore: {result.stderr.strip()}")
                continue
            if result.returncode != 0:
                problems.append(f"TXID {txid} restores but does not --compare equal to {app.path}: {result.stderr.strip()}")
            try:
                state = oracle.check(out)
            except OracleMismatch as exc:
                problems.append(f"TXID {txid}: {exc}")
                continue
            finally:
                os.remove(out)
            if claims and txid in claims and claims[txid] != state:
                problems.append(f"TXID {txid} holds generation/seq {state}, "
                                f"but was written when the database was at {claims[txid]}")
            if previous is not None and state < previous[0] and not first_only:
                problems.append(f"TXID {txid} holds generation/seq {state}, older than {previous[0]} at TXID {previous[1]}")
            previous = (state, txid)
            if latest and state != app.state:
                problems.append(f"the latest TXID {txid} holds generation/seq {state}, the database is at {app.state}: "
                                f"commits were lost")
        if first_only and problems:
            return problems
        latest_restores = txids[-1] not in failed
        verify = _ltxpool("verify", root)
        if (verify.returncode == 0) != latest_restores:
            said = verify.stdout.strip().splitlines()[-1:] if verify.stdout.strip() else verify.stderr.strip()
            restores = "restores" if latest_restores else "does not restore"
            problems.append(f"verify exits {verify.returncode} but the latest TXID {restores}: {said}")
        if failed and _verify_has_all():
            every = _ltxpool("verify", "--all", root)
            if every.returncode == 0:
                problems.append(f"verify --all passes, but TXIDs {failed} do not restore")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return problems


if __name__ == "__main__":
    sys.exit(_main())
