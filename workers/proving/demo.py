"""``ltxpool demo``: the whole product on an embedded default, with its own proof.

Who does what::

    this process                                 ltxpool supervise (child process)
    ------------                                 ---------------------------------
    SQLite workload (shop schema, WAL mode)      2 compaction workers: L0 -> L1 -> L2 -> L3, L9
      -> Replicator.step() every ~0.2 s            (short demo intervals)
         -> ltx/0/<txid>.ltx                    janitor: orphans, quarantine, retention
    saves the exact page image (serialize())     metrics on 127.0.0.1:<free port>
      at a mid-run TXID and at the end          <- scraped for progress and the summary

At the end the workload stops, the last change is replicated, the pool compacts it
and is stopped with SIGTERM (it must exit 0), and then the demo proves its point:
every LTX file verifies, and a restore of the latest TXID and of the mid-run TXID
each equal the source's page image at that TXID, byte for byte, and pass SQLite's
integrity check. One orphaned temp file, as a writer killed mid-write leaves, is
planted at the start; the janitor must remove it. Any failed check: exit 1.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from ltxpool.ltx import verify_file
from ltxpool.replica.atomic import temp_name_for
from ltxpool.replica.layout import LEVELS, Replica
from ltxpool.replica.restore import restore
from ltxpool.replicate.replicator import Replicator

__all__ = ["DemoReport", "run_demo"]

SCHEMA = """
CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT UNIQUE, created_at TEXT NOT NULL);
CREATE TABLE products (id INTEGER PRIMARY KEY, sku TEXT UNIQUE NOT NULL, title TEXT NOT NULL, price_cents INTEGER);
CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL REFERENCES customers(id),
                     status TEXT NOT NULL, total_cents INTEGER NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE order_items (order_id INTEGER NOT NULL REFERENCES orders(id), product_id INTEGER NOT NULL,
                          quantity INTEGER NOT NULL, price_cents INTEGER NOT NULL);
CREATE INDEX orders_by_customer ON orders(customer_id);
CREATE INDEX items_by_order ON order_items(order_id);
"""

CONFIG = """\
workers = 2
log_format = "text"

[compaction]
intervals = {{ 1 = 1, 2 = 3, 3 = 6 }}
snapshot_interval = 8
poll_interval = 0.2

[retention]
levels = {{ 0 = {keep}, 1 = {keep}, 2 = {keep}, 3 = {keep} }}
snapshots = {keep}

[janitor]
interval = 0.5

[supervisor]
grace = 10
"""

WORDS = ["amber", "basil", "cedar", "delta", "ember", "fjord", "garnet", "harbor", "iris", "juniper", "kestrel",
         "lumen", "maple", "nova", "onyx"]


@dataclass
class DemoReport:
    transactions: int = 0
    txid: int = 0
    files: dict[int, int] = field(default_factory=dict)
    bytes: int = 0
    counters: dict[str, float] = field(default_factory=dict)
    checks: list[tuple[str, bool, str]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(ok for _, ok, _ in self.checks)


class _Shop:
    """The write workload: inserts, updates, deletes and growth in a small shop."""

    def __init__(self, path: str, seed: int = 7) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, timeout=30)
        self.conn.execute("PRAGMA journal_mode=wal")
        self.conn.executescript(SCHEMA)
        self.rng = random.Random(seed)
        self.conn.execute("BEGIN")
        self.conn.executemany("INSERT INTO products (sku, title, price_cents) VALUES (?, ?, ?)",
                              [(f"SKU-{i:05d}", self._words(3), self.rng.randrange(100, 50_000)) for i in range(200)])
        self.conn.execute("COMMIT")
        self.transactions = 1

    def _words(self, n: int) -> str:
        return " ".join(self.rng.choice(WORDS) for _ in range(n))

    def one(self) -> None:
        """One realistic transaction, chosen at random."""
        roll, c = self.rng.random(), self.conn
        now = time.strftime("%Y-%m-%dT%H:%M:%S")
        c.execute("BEGIN")
        if roll < 0.45:
            cur = c.execute("INSERT INTO customers (name, email, created_at) VALUES (?, ?, ?)",
                            (self._words(2).title(), f"c{self.rng.getrandbits(48):x}@example.com", now))
            order = c.execute("INSERT INTO orders (customer_id, status, total_cents, created_at) VALUES (?, 'new', 0, ?)",
                              (cur.lastrowid, now)).lastrowid
            for _ in range(self.rng.randrange(1, 6)):
                c.execute("INSERT INTO order_items VALUES (?, ?, ?, ?)",
                          (order, self.rng.randrange(1, 201), self.rng.randrange(1, 4), self.rng.randrange(100, 50_000)))
            c.execute("UPDATE orders SET total_cents = (SELECT sum(quantity * price_cents) FROM order_items "
                      "WHERE order_id = ?) WHERE id = ?", (order, order))
        elif roll < 0.75:
            c.execute("UPDATE orders SET status = ? WHERE id IN (SELECT id FROM orders ORDER BY random() LIMIT 5)",
                      (self.rng.choice(["paid", "shipped", "delivered"]),))
        elif roll < 0.9:
            c.execute("DELETE FROM order_items WHERE order_id IN (SELECT id FROM orders WHERE status = 'delivered' "
                      "LIMIT 3)")
            c.execute("DELETE FROM orders WHERE status = 'delivered' AND id NOT IN (SELECT order_id FROM order_items)")
        else:
            c.executemany("INSERT INTO customers (name, email, created_at) VALUES (?, ?, ?)",
                          [(self._words(2).title() + " " + "x" * self.rng.randrange(200, 2000),
                            f"bulk{self.rng.getrandbits(48):x}@example.com", now) for _ in range(40)])
        c.execute("COMMIT")
        self.transactions += 1

    def image(self) -> bytes:
        """The database's exact pages as a reader sees them (WAL included)."""
        return self.conn.serialize()

    def close(self) -> None:
        self.conn.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _scrape(port: int) -> dict[str, float]:
    """Sums of the pool's counters by metric name (labels added up)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return {}
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_total"):
                totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


def _level_files(replica: Replica) -> dict[int, int]:
    return {level: len(listing.files) for level, listing in replica.list_all().items()}


def _check(report: DemoReport, name: str, action: Callable[[], str]) -> None:
    try:
        report.checks.append((name, True, action()))
    except Exception as exc:  # a failed check is reported, never raised: the summary names it
        report.checks.append((name, False, str(exc)))


def _restore_equals(replica: Replica, workdir: str, txid: int, expected: bytes) -> Callable[[], str]:
    def check() -> str:
        output = os.path.join(workdir, f"restored-{txid}.db")
        result = restore(replica, output, txid)
        with open(output, "rb") as restored:
            data = restored.read()
        if data != expected:
            first = next((i for i in range(min(len(data), len(expected))) if data[i] != expected[i]), None)
            raise AssertionError(f"restored {len(data)} bytes differ from the source's {len(expected)} "
                                 f"(first difference at byte {first})")
        return f"{result.commit} pages equal the source, integrity_check ok, read from {result.files} LTX file(s)"
    return check


def _verify_all(replica: Replica) -> str:
    count = 0
    for listing in replica.list_all().values():
        for f in listing.files:
            verify_file(f.path)
            count += 1
    return f"{count} LTX files verified"


def run_demo(workdir: str, seconds: float, say: Callable[[str], None]) -> DemoReport:
    """Run the demo in ``workdir`` for about ``seconds`` of workload; report what it proved."""
    database, replica = os.path.join(workdir, "shop.db"), Replica(os.path.join(workdir, "replica"))
    report = DemoReport()
    shop = _Shop(database)
    level0 = replica.ensure_level_dir(0)
    with open(os.path.join(level0, temp_name_for("0000000000000099-0000000000000099.ltx")), "wb") as orphan:
        orphan.write(b"what a writer killed mid-write leaves behind")
    config = os.path.join(workdir, "ltxpool.toml")
    with open(config, "w") as f:
        f.write(CONFIG.format(keep=max(120, int(seconds * 4))))
    port = _free_port()
    say(f"workdir {workdir}: database shop.db, replica replica/, pool log pool.log")
    with open(os.path.join(workdir, "pool.log"), "w") as log:
        pool = subprocess.Popen(
            [sys.executable, "-m", "ltxpool.cli", "supervise", "--config", config, "--metrics-port", str(port),
             replica.root], stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        with Replicator(database, replica, pin=True) as replicator:
            start = time.monotonic()
            last_progress, checkpoint = start, None
            while time.monotonic() - start < seconds:
                for _ in range(5):
                    shop.one()
                step = replicator.step()
                if step is not None:
                    report.txid = step.txid
                if checkpoint is None and time.monotonic() - start >= seconds / 2 and report.txid:
                    checkpoint = (report.txid, shop.image())
                    say(f"  saved the source's page image at TXID {report.txid} for the past-TXID check")
                if time.monotonic() - last_progress >= 1.0:
                    last_progress = time.monotonic()
                    counters, files = _scrape(port), _level_files(replica)
                    say(f"  {last_progress - start:4.1f}s  TXID {report.txid:5d}  transactions {shop.transactions:5d}  "
                        + "  ".join(f"L{level} {files[level]:3d}" for level in LEVELS)
                        + f"  compactions {counters.get('ltxpool_compactions_total', 0):.0f}")
                time.sleep(0.15)
            step = replicator.step()
            report.txid = step.txid if step is not None else report.txid
        latest = (report.txid, shop.image())
        report.transactions = shop.transactions
        say(f"workload stopped at TXID {report.txid}; waiting for the pool to compact it")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(
                f.max_txid == report.txid for f in replica.list_level(9).files):
            time.sleep(0.2)
        report.counters = _scrape(port)
    finally:
        pool.send_signal(signal.SIGTERM)
        exit_code = pool.wait(30)
        shop.close()
    report.files = _level_files(replica)
    report.bytes = sum(f.size for listing in replica.list_all().values() for f in listing.files)
    _check(report, "pool stopped cleanly on SIGTERM", lambda: _expect(exit_code == 0, f"exit code {exit_code}"))
    _check(report, "orphaned temp file removed by the janitor", lambda: _expect(
        not [n for n in os.listdir(level0) if n.endswith(".tmp")], "temp files remain in ltx/0"))
    _check(report, "every LTX file verifies", lambda: _verify_all(replica))
    _check(report, f"level-9 snapshot reaches the latest TXID {report.txid}", lambda: _expect(
        any(f.max_txid == report.txid for f in replica.list_level(9).files), "no snapshot at the latest TXID"))
    _check(report, f"restore of the latest TXID {latest[0]}", _restore_equals(replica, workdir, *latest))
    if checkpoint is not None:
        _check(report, f"restore of past TXID {checkpoint[0]}", _restore_equals(replica, workdir, *checkpoint))
    else:
        report.checks.append(("restore of a past TXID", False, "the run was too short to save a past image"))
    return report


def _expect(condition: bool, otherwise: str) -> str:
    if not condition:
        raise AssertionError(otherwise)
    return "ok"
