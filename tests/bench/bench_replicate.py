"""``replicate`` against a plain file copy: first snapshot, then 1 % of pages per step.

Run alone: ``python -m tests.bench.bench_replicate [--mib 256] [--small-mib 64] [--steps 9]``.

A WAL-mode database of ``--mib`` MiB (4 KiB pages; rows of text, numbers and a
random blob, as an application writes them) is built once per size.

* Snapshot: the first ``Replicator.step()`` (read, CRC, LZ4, write, fsync) against a
  plain copy of the database file (read, write; with and without fsync), each in a
  fresh process, alternately, best of ``--runs``; page cache warm for all. Target:
  snapshot throughput >= 50 % of the copy's (with fsync, as the snapshot has one).
  On a VM the fsync rate varies a lot from minute to minute: compare within a run.
* Incremental: a pinned replicator (as ``ltxpool replicate`` runs it) in a child
  process; the parent, as the application, updates rows on 1 % of the big
  database's pages between steps (the same number of pages on the small one). Target:
  step time proportional to the pages changed, not to the database: the small and
  big databases' median step times should be about equal.
* The fallback: the same change after a WAL restart the replicator did not see
  (unpinned), so it compares every page -- time proportional to the database.

Memory: peak RSS growth of each child (VmHWM after a reset, minus the RSS before the
work; per step for the incremental child, whose array is already loaded), next to
the checksum array (8 bytes a page) it is allowed to grow by.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

from ltxpool.replicate.replicator import Replicator
from tests.support.rss import peak_growth_mib, reset_peak_rss

PAGE_SIZE = 4096


def build(path: str, mib: int) -> int:
    """A WAL database of about ``mib`` MiB; returns its page count."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
    conn.execute("PRAGMA journal_mode=off")
    conn.execute("PRAGMA synchronous=off")
    conn.execute("CREATE TABLE events(id INTEGER PRIMARY KEY, body TEXT, n INTEGER, payload BLOB)")
    rows = mib * 1024 * 1024 // 395
    conn.execute(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?) "
        "INSERT INTO events(body, n, payload) SELECT printf('user%d signed in from %s status %d note %s', "
        "x, hex(randomblob(6)), x % 7, substr('alpha beta gamma delta select insert update where order', 1 + x % 20, 30)), "
        "x * 37, randomblob(200 + x % 150) FROM c",
        (rows,),
    )
    conn.execute("PRAGMA journal_mode=wal")
    pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
    conn.close()
    return pages


# -- children: one job each, memory measured from a fresh process ---------------------


def child_copy(db: str, out: str, sync: bool) -> dict[str, float]:
    baseline = reset_peak_rss()
    start = time.perf_counter()
    with open(db, "rb") as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
        dst.flush()
        if sync:
            os.fsync(dst.fileno())
    return {"seconds": time.perf_counter() - start, "rss_mib": peak_growth_mib(baseline)}


def child_snapshot(db: str, replica: str) -> dict[str, float]:
    baseline = reset_peak_rss()
    start = time.perf_counter()
    with Replicator(db, replica) as replicator:
        result = replicator.step()
    assert result is not None and result.snapshot
    return {"seconds": time.perf_counter() - start, "rss_mib": peak_growth_mib(baseline), "bytes": result.bytes}


def child_steps(db: str, replica: str, pin: bool) -> None:
    """Step on every line read from stdin; answer one JSON line per step (its time,
    and its peak RSS over the RSS before it, the checksum array included)."""
    with Replicator(db, replica, pin=pin) as replicator:
        for _ in sys.stdin:
            baseline = reset_peak_rss()
            start = time.perf_counter()
            result = replicator.step()
            seconds = time.perf_counter() - start
            print(json.dumps({
                "seconds": seconds,
                "pages": result.pages if result else 0,
                "full_scan": bool(result and result.full_scan),
                "snapshot": bool(result and result.snapshot),
                "rss_mib": peak_growth_mib(baseline),
            }), flush=True)


def run_child(*args: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-m", "tests.bench.bench_replicate", "--child", *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


# -- the application's side --------------------------------------------------------------


def snapshot_vs_copy(db: str, pages: int, runs: int, tmp: str) -> None:
    size = os.path.getsize(db)
    results: dict[str, list[dict[str, float]]] = {"copy": [], "copy+fsync": [], "snapshot": []}
    for run in range(runs):
        for kind in results:
            out = os.path.join(tmp, f"out-{run}")
            results[kind].append(run_child("snapshot" if kind == "snapshot" else kind, db, out))
            if os.path.isdir(out):
                shutil.rmtree(out)
            else:
                os.unlink(out)
    best = {kind: min(rows, key=lambda r: r["seconds"]) for kind, rows in results.items()}
    print(f"\nfirst snapshot of {size / 2**20:.0f} MiB ({pages} pages), best of {runs}, fresh process each, cache warm:")
    for kind, row in best.items():
        extra = f"  (LTX file {row['bytes'] / 2**20:.0f} MiB)" if "bytes" in row else ""
        print(f"  {kind:11}: {row['seconds']:6.2f} s {size / 1e6 / row['seconds']:6.0f} MB/s  "
              f"peak RSS growth {row['rss_mib']:5.1f} MiB{extra}  (all: {' '.join(format(r['seconds'], '.2f') for r in results[kind])})")
    ratio = best["copy+fsync"]["seconds"] / best["snapshot"]["seconds"]
    print(f"  snapshot / copy+fsync throughput: {ratio:.0%} (target >= 50%); checksum array {pages * 8 / 2**20:.1f} MiB")


def change_pages(conn: sqlite3.Connection, rng: random.Random, rows: int, pages: int) -> None:
    """Update one row on each of ``pages`` random leaf pages (rows are stored in id order)."""
    per_page = max(1, rows // conn.execute("PRAGMA page_count").fetchone()[0])
    ids = rng.sample(range(1, rows + 1, per_page), pages)
    conn.execute("BEGIN")
    conn.executemany("UPDATE events SET n = n + 1 WHERE id = ?", [(i,) for i in ids])
    conn.execute("COMMIT")


def incremental(db: str, replica: str, changed: int, steps: int, pin: bool, restart_wal: bool) -> list[dict[str, float]]:
    conn = sqlite3.connect(db, isolation_level=None)
    rows = int(conn.execute("SELECT max(id) FROM events").fetchone()[0])
    rng = random.Random(5)
    stepper = subprocess.Popen(
        [sys.executable, "-m", "tests.bench.bench_replicate", "--child", "steps", db, replica, "pin" if pin else "nopin"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert stepper.stdin is not None and stepper.stdout is not None
    results = []
    try:
        stepper.stdin.write("step\n")
        stepper.stdin.flush()
        json.loads(stepper.stdout.readline())
        for _ in range(steps):
            change_pages(conn, rng, rows, changed)
            if restart_wal:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                change_pages(conn, rng, rows, 1)
            stepper.stdin.write("step\n")
            stepper.stdin.flush()
            results.append(json.loads(stepper.stdout.readline()))
    finally:
        stepper.stdin.close()
        stepper.wait()
        conn.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--small-mib", type=int, default=64)
    parser.add_argument("--steps", type=int, default=9)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", default=None, help="scratch directory (default: a temp dir)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind in ("copy", "copy+fsync"):
            print(json.dumps(child_copy(*rest, sync=kind == "copy+fsync")))
        elif kind == "snapshot":
            print(json.dumps(child_snapshot(*rest)))
        else:
            child_steps(rest[0], rest[1], rest[2] == "pin")
        return

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        dbs = {}
        for mib in (args.small_mib, args.mib):
            path = os.path.join(tmp, f"app-{mib}.db")
            started = time.perf_counter()
            pages = build(path, mib)
            dbs[mib] = (path, pages)
            print(f"built {mib} MiB database: {pages} pages, {os.path.getsize(path) / 2**20:.0f} MiB "
                  f"in {time.perf_counter() - started:.1f} s")

        for mib in (args.small_mib, args.mib):
            snapshot_vs_copy(*dbs[mib], args.runs, tmp)

        big, pages = dbs[args.mib]
        size = os.path.getsize(big)
        changed = pages // 100
        print(f"\nincremental steps, {changed} pages changed per step (1% of {args.mib} MiB), {args.steps} steps, "
              "median; pinned replicator in a child process:")
        medians = {}
        for mib in (args.small_mib, args.mib):
            path, count = dbs[mib]
            steps = incremental(path, os.path.join(tmp, f"incr-{mib}"), changed, args.steps, pin=True, restart_wal=False)
            medians[mib] = statistics.median(r["seconds"] for r in steps)
            print(f"  {mib:4d} MiB ({count:6d} pages): median {medians[mib] * 1000:6.1f} ms/step "
                  f"(each: {' '.join(str(round(r['seconds'] * 1000)) for r in steps)} ms), "
                  f"pages written {min(r['pages'] for r in steps)}-{max(r['pages'] for r in steps)}, "
                  f"full scans {sum(r['full_scan'] for r in steps)}, "
                  f"peak RSS growth in a step {max(r['rss_mib'] for r in steps):.1f} MiB (array {count * 8 / 2**20:.1f} MiB)")
        print(f"  {args.mib} MiB / {args.small_mib} MiB step time: {medians[args.mib] / medians[args.small_mib]:.2f} "
              f"(database {args.mib / args.small_mib:.0f}x larger; target: about 1)")

        fallback = incremental(big, os.path.join(tmp, "fallback"), changed, args.steps, pin=False, restart_wal=True)
        median = statistics.median(r["seconds"] for r in fallback)
        print(f"\nfallback after an unseen WAL restart ({args.mib} MiB, full compare): {median * 1000:.1f} ms/step, "
              f"full scans {sum(r['full_scan'] for r in fallback)}/{len(fallback)}, "
              f"{size / 1e6 / median:.0f} MB/s compared")


if __name__ == "__main__":
    main()
