"""Shipping throughput into a local S3 server against a plain upload of the same bytes (#16).

Run alone: ``python -m tests.bench.bench_remote_ship [--snapshot-mib 256] [--small 10000]``.

Two replicas: one 256 MiB snapshot (incompressible pages, so the file is as big as
the database), and 10,000 small level-0 files (one 4 KiB page each). Each is shipped
by ``ship_replica`` (verify each file in full, then one conditional PUT with
Content-MD5, or a multipart upload above 16 MiB, parts in turn) and uploaded by the
baseline, in the same run and with the same client library and server (moto's, a
process on 127.0.0.1): ``aws s3 cp``'s way for the snapshot (boto3 ``upload_file``:
s3transfer, 8 MiB parts, 10 threads) and one ``put_object`` per file for the small
ones. Target: ltxpool >= 80 % of the baseline's throughput.

Each upload runs in a fresh process, which reports its seconds and its peak RSS
growth (VmHWM, reset at the start, minus the RSS before): target < 64 MiB for
ltxpool, whatever the file size (parts are read one at a time).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import subprocess
import sys
import tempfile
import time
from typing import Any

from ltxpool.ltx import HEADER_FLAG_NO_CHECKSUM, Encoder, Header
from ltxpool.remote import RemoteTarget, make_client, ship_replica
from ltxpool.replica.layout import Replica
from tests.support.rss import peak_growth_mib, reset_peak_rss
from tests.support.s3_server import TEST_ENV, wait_until_up, free_port

PAGE_SIZE = 4096


def _header(pages: int, low: int, high: int) -> Header:
    return Header(flags=HEADER_FLAG_NO_CHECKSUM, page_size=PAGE_SIZE, commit=pages, min_txid=low, max_txid=high,
                  timestamp=1)


def make_snapshot(root: str, mib: int) -> str:
    rng = random.Random(16)
    pool = [rng.randbytes(PAGE_SIZE) for _ in range(256)]
    pages = mib * 1024 * 1024 // PAGE_SIZE
    folder = os.path.join(root, "ltx", "9")
    os.makedirs(folder)
    path = os.path.join(folder, f"{1:016x}-{1:016x}.ltx")
    with open(path, "wb") as raw:
        encoder = Encoder(raw, _header(pages, 1, 1))
        for pgno in range(1, pages + 1):
            encoder.write_page(pgno, pgno.to_bytes(4, "big") + pool[pgno % 256][4:])
        encoder.finish()
    return path


def make_small_files(root: str, count: int) -> None:
    rng = random.Random(17)
    folder = os.path.join(root, "ltx", "0")
    os.makedirs(folder)
    for txid in range(2, count + 2):
        with open(os.path.join(folder, f"{txid:016x}-{txid:016x}.ltx"), "wb") as raw:
            encoder = Encoder(raw, _header(1, txid, txid))
            encoder.write_page(1, rng.randbytes(PAGE_SIZE))
            encoder.finish()


def _files(root: str) -> list[tuple[str, str]]:
    """(path, key) of every file, keyed as ltxpool keys them (level as 4 hex digits)."""
    found = []
    for level in (9, 0):
        folder = os.path.join(root, "ltx", str(level))
        if os.path.isdir(folder):
            found += [(os.path.join(folder, name), f"{level:04x}/{name}") for name in sorted(os.listdir(folder))]
    return found


def child(mode: str, root: str, endpoint: str, bucket: str, prefix: str) -> None:
    """In a fresh process: one upload, timed; prints seconds, bytes and peak RSS growth."""
    target = RemoteTarget(bucket, prefix, endpoint, "us-east-1", True)
    client = make_client(target)
    client.list_buckets()  # the connection and the credentials, before the clock starts
    files = _files(root)
    baseline = reset_peak_rss()
    started = time.perf_counter()
    if mode == "ltxpool":
        report = ship_replica(Replica(root), client, target)
        assert len(report.uploaded) == len(files), report
        sent = report.bytes_uploaded
    elif mode == "upload_file":
        (path, key), = files
        client.upload_file(path, bucket, f"{prefix}/{key}")
        sent = os.path.getsize(path)
    else:
        sent = 0
        for path, key in files:
            with open(path, "rb") as source:
                body = source.read()
            client.put_object(Bucket=bucket, Key=f"{prefix}/{key}", Body=body)
            sent += len(body)
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "bytes": sent, "rss_growth_mib": peak_growth_mib(baseline)}))


def _run(mode: str, root: str, endpoint: str, bucket: str) -> dict[str, Any]:
    prefix = f"{mode}-{secrets.token_hex(4)}"
    done = subprocess.run([sys.executable, "-m", "tests.bench.bench_remote_ship", "--child", mode, "--root", root,
                           "--endpoint", endpoint, "--bucket", bucket, "--prefix", prefix],
                          capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    # moto keeps objects in memory: empty the prefix before the next run.
    client = make_client(RemoteTarget(bucket, prefix, endpoint, "us-east-1", True))
    token = None
    while True:
        args: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix + "/"}
        if token:
            args["ContinuationToken"] = token
        page = client.list_objects_v2(**args)
        keys = [{"Key": item["Key"]} for item in page.get("Contents", ())]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys})
        if not page.get("IsTruncated"):
            break
        token = page["NextContinuationToken"]
    return result


def compare(name: str, root: str, baseline_mode: str, endpoint: str, bucket: str, rounds: int) -> bool:
    # Alternate the two, best of ``rounds`` each: the server's state (and the page cache) is alike for both.
    ours: list[dict[str, Any]] = []
    theirs: list[dict[str, Any]] = []
    for _ in range(rounds):
        theirs.append(_run(baseline_mode, root, endpoint, bucket))
        ours.append(_run("ltxpool", root, endpoint, bucket))
    best_ours = min(ours, key=lambda r: r["seconds"])
    best_theirs = min(theirs, key=lambda r: r["seconds"])
    mib = best_ours["bytes"] / 2**20
    ratio = best_theirs["seconds"] / best_ours["seconds"]
    growth = max(r["rss_growth_mib"] for r in ours)
    print(f"{name}: {mib:.1f} MiB; ltxpool {mib / best_ours['seconds']:.1f} MiB/s ({best_ours['seconds']:.2f} s), "
          f"{baseline_mode} {mib / best_theirs['seconds']:.1f} MiB/s ({best_theirs['seconds']:.2f} s): "
          f"{ratio:.0%} of the baseline (target >= 80 %); ltxpool RSS growth {growth:.1f} MiB (target < 64), "
          f"{baseline_mode} {max(r['rss_growth_mib'] for r in theirs):.1f} MiB")
    return ratio >= 0.8 and growth < 64


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--snapshot-mib", type=int, default=256)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    for hidden in ("--root", "--endpoint", "--bucket", "--prefix"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.update(TEST_ENV)
    if args.child:
        child(args.child, args.root, args.endpoint, args.bucket, args.prefix)
        return
    port = free_port()
    with tempfile.TemporaryDirectory() as work:
        server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        endpoint = f"http://127.0.0.1:{port}"
        try:
            wait_until_up(endpoint, server)
            bucket = f"bench-{secrets.token_hex(4)}"
            make_client(RemoteTarget(bucket, "x", endpoint, "us-east-1", True)).create_bucket(Bucket=bucket)
            big, small = os.path.join(work, "big"), os.path.join(work, "small")
            make_snapshot(big, args.snapshot_mib)
            make_small_files(small, args.small)
            ok = compare(f"snapshot of {args.snapshot_mib} MiB", big, "upload_file", endpoint, bucket, args.rounds)
            ok &= compare(f"{args.small} level-0 files", small, "put_object", endpoint, bucket, args.rounds)
        finally:
            server.terminate()
            server.wait(10)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
