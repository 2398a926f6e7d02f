"""Compaction throughput and memory, against plain file copies of the same bytes.

Run alone: ``python -m tests.bench.bench_compaction [--quick]``.

1. 1,000 level-0 files (4 KiB pages, 10 random pages each, 20k-page database) into
   level 1.
2. A level-9 snapshot of a 256 MiB database (65,536 pages of 4 KiB) from its level-0
   snapshot plus 20 small transactions.

Each is timed in a fresh process (every round until nothing is left: a round merges
at most 256 inputs), which reports its peak RSS growth, next to the practical limit
measured in the same run: reading the same input bytes and writing an output of the
same size with fsync. Three runs each, alternating, medians reported. Targets: snapshot throughput >= 50% of the copy
limit; peak RSS growth < 64 MiB for the 256 MiB snapshot.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time

from ltxpool.ltx import HEADER_FLAG_NO_CHECKSUM, Encoder, Header
from ltxpool.replica.atomic import AtomicWriter
from ltxpool.replica.layout import Replica

PAGE = 4096

_CHILD = """
import json, resource, sys, time
from ltxpool.replica.compactor import compact_level
from ltxpool.replica.layout import Replica
replica = Replica({replica!r})
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
rounds = inputs = written = 0
while (result := compact_level(replica, {level})) is not None:
    rounds, inputs, written = rounds + 1, inputs + result.inputs, written + result.bytes_written
seconds = time.perf_counter() - start
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"seconds": seconds, "rss_growth_kib": after - before, "bytes": written,
                  "inputs": inputs, "rounds": rounds}}))
"""


def page(rng: random.Random) -> bytes:
    """A page like a SQLite b-tree page: a random part and a run of one byte."""
    head = rng.randbytes(rng.randrange(PAGE // 4, PAGE * 3 // 4))
    return head + bytes([rng.randrange(256)]) * (PAGE - len(head))


def write_ltx(replica: Replica, level: int, txid_range: tuple[int, int], commit: int, pages, timestamp: int) -> None:
    header = Header(flags=HEADER_FLAG_NO_CHECKSUM, page_size=PAGE, commit=commit, min_txid=txid_range[0],
                    max_txid=txid_range[1], timestamp=timestamp, pre_apply_checksum=0, wal_offset=0, wal_size=0,
                    wal_salt1=0, wal_salt2=0, node_id=0)
    replica.ensure_level_dir(level)
    with AtomicWriter(replica.path_of(level, *txid_range)) as writer:
        encoder = Encoder(writer, header)
        for pgno, data in pages:
            encoder.write_page(pgno, data)
        encoder.finish()
        writer.commit()


def copy_limit(inputs: list[str], output_size: int, directory: str) -> float:
    """Seconds to read every input and write ``output_size`` bytes with fsync: the practical limit."""
    os.system("sync")
    start = time.perf_counter()
    for path in inputs:
        with open(path, "rb") as source:
            while source.read(1 << 20):
                pass
    target = os.path.join(directory, "copy.out")
    block = os.urandom(1 << 20)
    with open(target, "wb") as out:
        remaining = output_size
        while remaining > 0:
            out.write(block[: min(remaining, len(block))])
            remaining -= len(block)
        out.flush()
        os.fsync(out.fileno())
    seconds = time.perf_counter() - start
    os.unlink(target)
    return seconds


def run_child(replica: Replica, level: int) -> dict:
    """Compact ``level`` until nothing is left, in a fresh process; remove the outputs after."""
    os.system("sync")
    code = _CHILD.format(replica=replica.root, level=level)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def measure(replica: Replica, level: int, keep: set[str], repeats: int, base: str) -> tuple[dict, float]:
    """Median of ``repeats`` runs, each alternating with the copy limit (the disk is noisy)."""
    inputs = [f.path for f in replica.list_level(level - 1 if level != 9 else 0).files]
    runs, limits = [], []
    for _ in range(repeats):
        for f in replica.list_level(level).files:
            if f.path not in keep:
                os.unlink(f.path)
        runs.append(run_child(replica, level))
        limits.append(copy_limit(inputs, runs[-1]["bytes"], base))
    runs.sort(key=lambda r: r["seconds"])
    return runs[len(runs) // 2], sorted(limits)[len(limits) // 2]


def report(label: str, result: dict, inputs: list[str], limit: float, rss_target_mib: float | None) -> None:
    input_bytes = sum(os.path.getsize(path) for path in inputs)
    ours = (input_bytes + result["bytes"]) / result["seconds"] / 1e6
    copy = (input_bytes + result["bytes"]) / limit / 1e6
    rss = result["rss_growth_kib"] / 1024
    rss_note = "" if rss_target_mib is None else (" ok" if rss < rss_target_mib else " MISSED") + f" < {rss_target_mib}"
    print(f"   {label}: {result['inputs']} inputs in {result['rounds']} rounds, {input_bytes / 1e6:.1f} MB in, "
          f"{result['bytes'] / 1e6:.1f} MB out (median of the runs)")
    print(f"      ltxpool {result['seconds']:.2f} s ({ours:.0f} MB/s read+written)   copy limit {limit:.2f} s "
          f"({copy:.0f} MB/s)   ratio {limit / result['seconds']:.2f}")
    print(f"      peak RSS growth {rss:.1f} MiB{rss_note}")


def bench_level1(base: str, files: int) -> None:
    print(f"== 1. {files} level-0 files (10 random pages each, 20k-page database) into level 1")
    rng = random.Random(1)
    replica = Replica(os.path.join(base, "l1"))
    now = int(time.time() * 1000)
    for txid in range(2, files + 2):
        pgnos = sorted(rng.sample(range(1, 20_001), 10))
        write_ltx(replica, 0, (txid, txid), 20_000, ((p, page(rng)) for p in pgnos), now)
    # Level 1 already holds TXID 1 (the database's first snapshot), so the plan is exactly
    # the 1,000 small files.
    write_ltx(replica, 1, (1, 1), 20_000, ((p, bytes(PAGE)) for p in range(1, 20_001)), now)
    keep = {f.path for f in replica.list_level(1).files}
    result, limit = measure(replica, 1, keep, 3, base)
    report("level 1", result, [f.path for f in replica.list_level(0).files], limit, None)


def bench_snapshot(base: str, pages: int) -> None:
    print(f"== 2. level-9 snapshot of a {pages * PAGE / 2**20:.0f} MiB database (+20 small transactions)")
    rng = random.Random(2)
    replica = Replica(os.path.join(base, "l9"))
    now = int(time.time() * 1000)
    write_ltx(replica, 0, (1, 1), pages, ((p, page(rng)) for p in range(1, pages + 1)), now)
    for txid in range(2, 22):
        pgnos = sorted(rng.sample(range(1, pages + 1), 10))
        write_ltx(replica, 0, (txid, txid), pages, ((p, page(rng)) for p in pgnos), now)
    result, limit = measure(replica, 9, set(), 3, base)
    report("snapshot", result, [f.path for f in replica.list_level(0).files], limit, 64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 files and a 32 MiB snapshot (a smoke run)")
    parser.add_argument("--dir", default=None, help="where to write (default: system temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ltxpool-bench-", dir=args.dir) as base:
        bench_level1(base, 100 if args.quick else 1000)
        bench_snapshot(base, 8192 if args.quick else 65536)


if __name__ == "__main__":
    main()
