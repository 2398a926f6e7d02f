"""Shipping to a bucket over a network that fails: 500s, SlowDown, resets, lost answers, cut bodies,
and a shipper killed between the parts of a multipart upload.

The store is moto's S3 server; the faults come from a proxy in front of it
(tests/support/s3_faults.py) that fails a share of the requests. What must hold: the
ship completes, every object in the bucket is at every moment either absent or the
whole local file (a watcher lists the bucket directly all along), nothing local is
missing from it afterwards, and a restore through the same faults equals the source.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from pathlib import Path

import pytest

from ltxpool.remote import (
    RemoteTarget,
    ShipSettings,
    abort_stale_uploads,
    make_client,
    object_key,
    restore_remote,
    ship_file,
    ship_replica,
)
from ltxpool.replica.layout import LtxFile, Replica
from tests.support.fault_counts import record
from tests.support.helpers import run_ltxpool
from tests.support.litestream_peer import create_wal_database, read_rows
from tests.support.s3_faults import FAULTS, faulty_proxy
from tests.support.s3_server import S3

MiB = 1 << 20
SMALL_PARTS = ShipSettings(multipart_threshold=5 * MiB, part_size=5 * MiB)


def _replica_with_a_large_snapshot(tmp_path: Path, blobs: int = 12, steps: int = 4) -> tuple[str, str]:
    """A snapshot of ~``blobs`` MiB (random: it does not compress), then small level-0 changes."""
    db, root = str(tmp_path / "app.db"), str(tmp_path / "replica")
    create_wal_database(db)
    rng = random.Random(5)
    with closing(sqlite3.connect(db)) as conn, conn:
        for _ in range(blobs):
            conn.execute("INSERT INTO items (payload) VALUES (?)", (rng.randbytes(MiB),))
    for step in range(steps):
        if step:
            with closing(sqlite3.connect(db)) as conn, conn:
                for _ in range(20):
                    conn.execute("INSERT INTO items (payload) VALUES (?)", (rng.randbytes(300),))
        done = run_ltxpool("replicate", db, root, "--once")
        assert done.returncode == 0, done.stderr
    return db, root


def _local_files(root: str) -> list[LtxFile]:
    return [f for listing in Replica(root).list_all().values() for f in listing.files]


def _local_bytes(f: LtxFile) -> bytes:
    return Path(f.path).read_bytes()


class BucketWatcher:
    """Lists the bucket directly (no proxy) all along; any object whose size is not its local file's is a fault."""

    def __init__(self, s3: S3, target: RemoteTarget, sizes: dict[str, int]) -> None:
        self.s3, self.target, self.sizes = s3, target, sizes
        self.partial: list[tuple[str, int]] = []
        self.listings = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> BucketWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, size in self.s3.keys(self.target.prefix + "/").items():
                if key in self.sizes and size != self.sizes[key]:
                    self.partial.append((key, size))
            self.listings += 1
            time.sleep(0.02)


def test_shipping_through_faults_completes_and_the_bucket_never_holds_a_partial_object(tmp_path, s3: S3):
    db, root = _replica_with_a_large_snapshot(tmp_path, steps=16)
    direct = s3.target("db")
    files = _local_files(root)
    sizes = {object_key(direct, f.level, f.min_txid, f.max_txid): f.size for f in files}
    assert max(sizes.values()) > 2 * SMALL_PARTS.part_size, "one file takes a multipart upload of 3 parts"
    with faulty_proxy(s3.server.port, share=0.35, seed=16) as proxy, BucketWatcher(s3, direct, sizes) as watcher:
        target = s3.target("db", endpoint=proxy.endpoint)
        report = ship_replica(Replica(root), make_client(target), target, settings=SMALL_PARTS)
    assert sorted(report.uploaded) == sorted(sizes)
    assert watcher.partial == [] and watcher.listings > 0
    for kind in FAULTS:
        assert proxy.counts[kind] > 0, f"fault {kind} was never injected: {proxy.counts}"
    record("s3 request faults while shipping", proxy.injected, **dict(proxy.counts), listings=watcher.listings)
    for f in files:
        key = object_key(direct, f.level, f.min_txid, f.max_txid)
        assert s3.body(key) == _local_bytes(f), f"{key} is the local file byte for byte"
    # Incomplete uploads a lost CreateMultipartUpload answer left are no objects, and the janitor's call clears them.
    abort_stale_uploads(make_client(direct), direct, older_than=0, now=time.time() + 1)
    assert not make_client(direct).list_multipart_uploads(Bucket=s3.bucket).get("Uploads")

    with faulty_proxy(s3.server.port, share=0.3, seed=61) as proxy:
        target = s3.target("db", endpoint=proxy.endpoint)
        result = restore_remote(make_client(target), target, tmp_path / "restored.db")
    assert proxy.injected > 0 and proxy.counts["cut"] > 0
    record("s3 request faults while restoring", proxy.injected, **dict(proxy.counts))
    assert read_rows(tmp_path / "restored.db") == read_rows(db)
    assert result.files >= 2


def test_an_exception_between_parts_aborts_the_upload_and_leaves_no_object(tmp_path, s3: S3, monkeypatch):
    _, root = _replica_with_a_large_snapshot(tmp_path, steps=1)
    target = s3.target("db")
    client = make_client(target)
    (snapshot,) = Replica(root).list_level(9).files
    real, parts = client.upload_part, []

    def fail_after_one(**kwargs: object) -> object:
        if parts:
            raise KeyboardInterrupt("injected between parts")
        parts.append(kwargs["PartNumber"])
        return real(**kwargs)

    monkeypatch.setattr(client, "upload_part", fail_after_one)
    with pytest.raises(KeyboardInterrupt):
        ship_file(client, target, 9, snapshot, settings=SMALL_PARTS)
    key = object_key(target, 9, snapshot.min_txid, snapshot.max_txid)
    assert len(parts) == 1, "one part went up (parts are sent several at a time: any one of them)"
    assert key not in s3.keys("db/")
    assert not make_client(target).list_multipart_uploads(Bucket=s3.bucket).get("Uploads"), "aborted"
    assert ship_file(make_client(target), target, 9, snapshot, settings=SMALL_PARTS) == snapshot.size
    assert s3.body(key) == _local_bytes(snapshot)


_SHIPPER = """
import sys
from ltxpool.remote import RemoteTarget, ShipSettings, make_client, ship_replica
from ltxpool.replica.layout import Replica
bucket, endpoint, root = sys.argv[1:4]
target = RemoteTarget(bucket, "db", endpoint, "us-east-1", True)
ship_replica(Replica(root), make_client(target), target, settings=ShipSettings(5 << 20, 5 << 20))
"""


def test_a_shipper_sigkilled_between_parts_leaves_no_object_and_the_next_ship_completes_it(tmp_path, s3: S3):
    _, root = _replica_with_a_large_snapshot(tmp_path, steps=1)
    direct = s3.target("db")
    (snapshot,) = Replica(root).list_level(9).files
    key = object_key(direct, 9, snapshot.min_txid, snapshot.max_txid)
    client = make_client(direct)
    with faulty_proxy(s3.server.port, delay=0.5) as proxy:
        shipper = subprocess.Popen([sys.executable, "-c", _SHIPPER, s3.bucket, proxy.endpoint, root],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        try:
            while True:
                uploads = client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads", [])
                if uploads and client.list_parts(Bucket=s3.bucket, Key=key, UploadId=uploads[0]["UploadId"]).get("Parts"):
                    break
                assert shipper.poll() is None, shipper.communicate()
                assert time.monotonic() < deadline, "the shipper never uploaded a part"
                time.sleep(0.05)
            os.kill(shipper.pid, signal.SIGKILL)
        finally:
            shipper.kill()
            shipper.wait()
    assert shipper.returncode == -signal.SIGKILL
    record("SIGKILL of a shipper between multipart parts", 1)
    assert key not in s3.keys("db/"), "an incomplete multipart upload is no object"
    assert client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads"), "the dead shipper's upload is left"
    report = ship_replica(Replica(root), make_client(direct), direct, settings=SMALL_PARTS)
    assert key in report.uploaded
    assert s3.body(key) == _local_bytes(snapshot)
    assert not client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads"), "the next ship aborted the orphan"
