"""LTX codec throughput against its practical limit, and its memory bound.

Run alone: ``python -m tests.bench.bench_codec [--mib 64]``.

The limit is the bare work no LTX codec can avoid: LZ4-compress (or decompress)
every page and CRC it, in one tight loop over the same pages. Encode and
decode+verify are timed over a 64 MiB snapshot of 4 KiB pages whose content looks
like SQLite's (a page header, cells of text, numbers and random blobs, zeroed free
space), so LZ4 does realistic work. Targets: codec >= 70 % of the limit both ways.

Memory is measured in fresh child processes, one encoding a 64 MiB snapshot to a
file (pages generated on the fly, so they never sit in memory together) and one
verifying it: peak RSS (VmHWM, reset at the start) minus the RSS before starting.
Target: growth < 16 MiB.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import struct
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable

import lz4.block
from fastcrc.crc64 import go_iso

from ltxpool.ltx import HEADER_FLAG_NO_CHECKSUM, Decoder, Encoder, Header, verify_file
from tests.support.rss import peak_growth_mib, reset_peak_rss

PAGE_SIZE = 4096
FRAME = struct.Struct(">IHI")
WORDS = b"alpha beta gamma delta select insert update where order group index table user email status".split()


def sqlite_like_page(rng: random.Random, pgno: int) -> bytes:
    """A b-tree leaf page: header, cells of mixed text/numbers/blobs, zeroed free space."""
    fill = rng.uniform(0.4, 0.95)
    cells = bytearray(b"\x0d\x00\x00\x00\x10\x0f\x00\x00" + pgno.to_bytes(4, "big"))
    while len(cells) < PAGE_SIZE * fill:
        kind = rng.random()
        if kind < 0.45:
            cells += b" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 12)))
        elif kind < 0.75:
            cells += rng.randbytes(rng.randint(8, 64))
        else:
            cells += b"%d,%d;" % (rng.randint(0, 10**9), rng.randint(0, 100))
    page = bytes(cells[:PAGE_SIZE])
    return page + bytes(PAGE_SIZE - len(page))


def make_pages(mib: int, seed: int = 7) -> list[bytes]:
    rng = random.Random(seed)
    return [sqlite_like_page(rng, pgno) for pgno in range(1, mib * 1024 * 1024 // PAGE_SIZE + 1)]


class NullSink:
    def write(self, data: bytes) -> int:
        return len(data)


def best_pair(runs: int, limit: Callable[[], object], codec: Callable[[], object]) -> tuple[float, float]:
    """Best time of each, running them alternately so that machine noise hits both alike."""
    best = [float("inf"), float("inf")]
    for _ in range(runs):
        for i, fn in enumerate((limit, codec)):
            start = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - start)
    return best[0], best[1]


def header_for(pages: int) -> Header:
    return Header(flags=HEADER_FLAG_NO_CHECKSUM, page_size=PAGE_SIZE, commit=pages, min_txid=1, max_txid=1, timestamp=1)


def throughput(mib: int, runs: int) -> None:
    pages = make_pages(mib)
    total = len(pages) * PAGE_SIZE
    header = header_for(len(pages))
    compressed = [lz4.block.compress(page, store_size=False) for page in pages]

    def limit_encode() -> None:
        for page in pages:
            lz4.block.compress(page, store_size=False)
            go_iso(page)

    def limit_decode() -> None:
        for blob in compressed:
            go_iso(lz4.block.decompress(blob, PAGE_SIZE))

    def encode() -> None:
        encoder = Encoder(NullSink(), header)
        for pgno, page in enumerate(pages, 1):
            encoder.write_page(pgno, page)
        encoder.finish()

    sink = io.BytesIO()
    encoder = Encoder(sink, header)
    for pgno, page in enumerate(pages, 1):
        encoder.write_page(pgno, page)
    encoder.finish()
    blob = sink.getvalue()

    def decode() -> None:
        decoder = Decoder(io.BytesIO(blob))
        deque(decoder.pages(), maxlen=0)
        assert decoder.trailer is not None

    def verify() -> None:
        verify_file(path)

    def floor_decode() -> None:
        """Only the calls any Python decoder of this layout makes per frame: no checks, no I/O."""
        view, pos, crc = memoryview(blob), 100, 0
        while True:
            pgno, _, size = FRAME.unpack_from(blob, pos)
            if pgno == 0:
                return
            page = lz4.block.decompress(view[pos + 10 : pos + 10 + size], PAGE_SIZE)
            crc = go_iso(page, go_iso(view[pos : pos + 10], crc))
            pos += 10 + size

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "0000000000000001-0000000000000001.ltx")
        with open(path, "wb") as out:
            out.write(blob)
        rows = [
            ("encode", *best_pair(runs, limit_encode, encode)),
            ("decode+verify", *best_pair(runs, limit_decode, decode)),
            ("verify_file", *best_pair(runs, limit_decode, verify)),
            ("decode floor", *best_pair(runs, limit_decode, floor_decode)),
        ]
    mb = total / 1e6
    print(f"{mib} MiB snapshot, {len(pages)} pages of {PAGE_SIZE} B, compressed to {len(blob) / total:.0%}; best of {runs}")
    print(f"{'':15}{'limit MB/s':>12}{'codec MB/s':>12}{'ratio':>8}")
    for name, limit, codec in rows:
        print(f"{name:15}{mb / limit:12.0f}{mb / codec:12.0f}{limit / codec:8.0%}")
    print("decode+verify: Decoder.pages() from memory (every page, file checksum, trailer);")
    print("verify_file: from a file on disk, plus every page-index entry against its frame.")
    print("decode floor: unpack + decompress + CRC of header and page per frame, nothing else.")


def rss_child(mode: str, mib: int, path: str) -> None:
    """In a fresh process: peak RSS (VmHWM) growth over the RSS before encoding or verifying."""
    rng = random.Random(3)
    pool = [sqlite_like_page(rng, n) for n in range(64)]
    count = mib * 1024 * 1024 // PAGE_SIZE
    baseline = reset_peak_rss()
    if mode == "encode":
        with open(path, "wb", buffering=0) as raw:
            encoder = Encoder(raw, header_for(count))
            for pgno in range(1, count + 1):
                encoder.write_page(pgno, pgno.to_bytes(4, "big") + pool[pgno % 64][4:])
            encoder.finish()
    else:
        verify_file(path)
    print(peak_growth_mib(baseline))


def memory(mib: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "0000000000000001-0000000000000001.ltx")
        growth = {}
        for mode in ("encode", "verify"):
            out = subprocess.run(
                [sys.executable, "-m", "tests.bench.bench_codec", "--rss-child", mode, "--mib", str(mib), "--path", path],
                check=True, capture_output=True, text=True,
            )
            growth[mode] = float(out.stdout)
        size = os.path.getsize(path)
    print(
        f"peak RSS growth, fresh process each, {mib} MiB snapshot ({size / 2**20:.0f} MiB file): "
        f"encode {growth['encode']:.1f} MiB, verify_file {growth['verify']:.1f} MiB (target < 16)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rss-child", choices=("encode", "verify"), help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(args.rss_child, args.mib, args.path)
        return
    throughput(args.mib, args.runs)
    memory(args.mib)


if __name__ == "__main__":
    main()
