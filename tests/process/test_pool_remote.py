"""The pool ships its replicas into a bucket (#16): real pools, a real S3 server, real restores.

``ltxpool supervise`` with a ``[[databases]] dir`` entry and its ``[databases.remote]``
replicates real SQLite databases (an app committing rows; the oracle is the ids each
commit returned) and its shipper copies every replica into moto's S3 server
(tests/support/s3_server.py), through the fault proxy where a test says so. The
bucket is checked by ``ltxpool restore s3://...``, ``ltxpool verify s3://...`` and the
real ``litestream restore``, each against the committed ids.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ltxpool.remote import make_client, parse_key
from ltxpool.replica.layout import Replica
from ltxpool.replica.shipped import read_shipped, shipped_key
from tests.process.test_pool_databases import folders, replica_of, wait_restores
from tests.process.test_supervisor import Pool, eventually
from tests.support.fault_counts import record
from tests.support.helpers import run_ltxpool
from tests.support.litestream_peer import LITESTREAM
from tests.support.many_databases import Writers, create_database
from tests.support.s3_faults import faulty_proxy
from tests.support.s3_server import S3, S3Server, free_port, wait_until_up


def remote_config(source: Path, replicas: Path, s3: S3, prefix: str, endpoint: str | None = None,
                  shipper: str = "") -> str:
    return (f'\n[[databases]]\ndir = "{source}"\npattern = "*.db"\nrecursive = true\n'
            f'replica_root = "{replicas}"\ninterval = 0.2\n'
            f'\n[databases.remote]\nurl = "s3://{s3.bucket}/{prefix}"\nendpoint = "{endpoint or s3.endpoint}"\n'
            f'\n[shipper]\ninterval = 0.2\nbackoff_max = 1\n{shipper}')


def remote_prefix(prefix: str, source: Path, database: Path) -> str:
    return f"{prefix}/{database.relative_to(source)}"


def bucket_holds_replica(s3: S3, prefix: str, replica: str) -> bool:
    """Every local LTX file of ``replica`` is an object of the same size under ``prefix``."""
    target = s3.target(prefix)
    held = {}
    for key, size in s3.keys(prefix + "/").items():
        parsed = parse_key(target, key)
        if parsed is not None:
            held[parsed] = size
    local = {(f.level, f.min_txid, f.max_txid): f.size
             for listing in Replica(replica).list_all().values() for f in listing.files}
    return bool(local) and all(held.get(name) == size for name, size in local.items())


def restored_from_bucket(s3: S3, prefix: str, out: Path) -> set[int]:
    done = run_ltxpool("restore", s3.url(prefix), str(out))
    assert done.returncode == 0, done.stderr
    conn = sqlite3.connect(out)
    try:
        return {row for (row,) in conn.execute("SELECT id FROM t")}
    finally:
        conn.close()


def assert_no_partial_object(s3: S3, prefix: str, source: Path, replicas: Path, databases: list[Path]) -> None:
    """Every object under a final name is complete: ``ltxpool verify s3://`` decodes each in full."""
    for database in databases:
        where = remote_prefix(prefix, source, database)
        verified = run_ltxpool("verify", s3.url(where))
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert re.search(r"verified (\d+) files: \1 ok, 0 bad", verified.stdout), verified.stdout


def five_databases(source: Path) -> dict[Path, set[int]]:
    committed = {}
    for index in range(5):
        database = source / f"t{index % 2}" / f"app{index}.db"
        committed[database] = create_database(database, rows=index + 1)
    return committed


def wait_shipped(s3: S3, prefix: str, source: Path, replicas: Path, databases: list[Path], pool: Pool,
                 timeout: float = 60.0) -> None:
    def caught_up() -> bool:
        return all(bucket_holds_replica(s3, remote_prefix(prefix, source, db), replica_of(source, replicas, db))
                   for db in databases)
    eventually(caught_up, timeout=timeout, what="the bucket holding every replica's files", pool=pool)


def assert_status_shows_the_remotes_caught_up(pool: Pool, committed: dict[Path, set[int]], source: Path,
                                              replicas: Path, s3: S3) -> None:
    """``status --config --remote``: per database, the bucket's objects, bytes, newest TXID, no lag."""
    done = run_ltxpool("status", "--config", str(pool.config), "--remote", "--json")
    assert done.returncode == 0, done.stderr
    rows = {row["replica"]: row["remote"] for row in json.loads(done.stdout)["databases"]}
    for database in committed:
        replica = replica_of(source, replicas, database)
        remote = rows[replica]
        held = s3.keys(remote_prefix("tenants", source, database) + "/")
        objects = {key: size for key, size in held.items() if key.endswith(".ltx")}
        assert remote["url"] == f"s3://{s3.bucket}/{remote_prefix('tenants', source, database)}"
        assert (remote["objects"], remote["bytes"]) == (len(objects), sum(objects.values()))
        assert remote["newest_txid"] == remote["local_txid"] and remote["newest_txid"] > 1
        assert (remote["lag_txids"], remote["pending"], remote["lag_seconds"], remote["error"]) == (0, 0, 0.0, None)
    text = run_ltxpool("status", "--config", str(pool.config), "--remote")
    assert text.returncode == 0, text.stderr
    assert len(re.findall(r"remote s3://\S+: \d+ objects, .* newest TXID \d+, behind local by 0 TXIDs, 0 files",
                          text.stdout)) == 5, text.stdout


def test_a_pool_ships_a_dir_entry_and_ltxpool_and_litestream_restore_the_bucket_to_the_committed_rows(
    tmp_path: Path, s3: S3,
) -> None:
    source, replicas = folders(tmp_path)
    committed = five_databases(source)
    port = free_port()
    pool = Pool(tmp_path, [], extra_config=remote_config(source, replicas, s3, "tenants")
                + f"\n[metrics]\nport = {port}\n")
    try:
        with Writers(list(committed), committed, pause=0.05):
            time.sleep(3)
        wait_restores(committed, source, replicas)
        wait_shipped(s3, "tenants", source, replicas, list(committed), pool)
        assert_status_shows_the_remotes_caught_up(pool, committed, source, replicas, s3)
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        shipped_objects = float(re.search(r"^ltxpool_remote_shipped_objects_total (\S+)$", metrics, re.M).group(1))
        shipped_bytes = float(re.search(r"^ltxpool_remote_shipped_bytes_total (\S+)$", metrics, re.M).group(1))
        assert shipped_objects >= 5 * 2 and shipped_bytes > 0
        assert re.search(r"^ltxpool_remote_upload_failures_total 0\.0$", metrics, re.M)
        assert re.search(r"^ltxpool_remote_lag_seconds 0\.0$", metrics, re.M)
        assert re.search(r'^ltxpool_children\{role="shipper"\} 1\.0$', metrics, re.M)
        shipper = pool.pid_of("shipper")
        with open(f"/proc/{shipper}/comm") as comm:
            assert comm.read().strip() == "ltx:shipper"
        for database in committed:
            replica = Replica(replica_of(source, replicas, database))
            local = {shipped_key(f) for listing in replica.list_all().values() for f in listing.files}
            eventually(lambda replica=replica, local=local: local <= read_shipped(replica), timeout=10,
                       what="the shipped record naming every local file", pool=pool)
        lease = f"tenants/{next(iter(committed)).relative_to(source)}/.ltxpool-lease"
        assert lease in s3.keys("tenants/")
        assert pool.stop() == 0
    finally:
        pool.kill()
    assert not [key for key in s3.keys("tenants/") if key.endswith(".ltxpool-lease")], "leases released at stop"
    for index, database in enumerate(sorted(committed)):
        restored = restored_from_bucket(s3, remote_prefix("tenants", source, database), tmp_path / f"r{index}.db")
        assert restored == committed[database], database
    assert_no_partial_object(s3, "tenants", source, replicas, list(committed))
    # The real Litestream reads the same bucket.
    first = sorted(committed)[0]
    out = tmp_path / "by-litestream.db"
    env = {k: v for k, v in os.environ.items() if k not in ("AWS_CA_BUNDLE", "LOG_LEVEL")}
    done = subprocess.run([LITESTREAM, "restore", "-o", str(out), s3.url(remote_prefix("tenants", source, first))],
                          capture_output=True, text=True, timeout=120, env=env, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout + done.stderr
    conn = sqlite3.connect(out)
    try:
        assert {row for (row,) in conn.execute("SELECT id FROM t")} == committed[first]
    finally:
        conn.close()


def test_shipping_through_500s_slowdowns_and_resets_completes_with_no_partial_object(tmp_path: Path, s3: S3) -> None:
    source, replicas = folders(tmp_path)
    committed = five_databases(source)
    with faulty_proxy(s3.server.port, share=0.2, seed=16) as proxy:
        pool = Pool(tmp_path, [], extra_config=remote_config(source, replicas, s3, "faulty", proxy.endpoint))
        try:
            with Writers(list(committed), committed, pause=0.05):
                time.sleep(3)
            wait_restores(committed, source, replicas)
            wait_shipped(s3, "faulty", source, replicas, list(committed), pool, timeout=120)
            assert pool.stop() == 0
        finally:
            pool.kill()
    assert proxy.injected >= 10, proxy.counts
    record("remote faults injected while shipping", proxy.injected)
    for index, database in enumerate(sorted(committed)):
        restored = restored_from_bucket(s3, remote_prefix("faulty", source, database), tmp_path / f"r{index}.db")
        assert restored == committed[database], database
    assert_no_partial_object(s3, "faulty", source, replicas, list(committed))


def big_database(path: Path, megabytes: int) -> set[int]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=wal")
        conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
        conn.executemany("INSERT INTO t(id, v) VALUES (?, randomblob(1048576))", [(i,) for i in range(1, megabytes + 1)])
    conn.close()
    return set(range(1, megabytes + 1))


def test_a_shipper_killed_mid_multipart_resumes_after_its_restart_and_loses_nothing(tmp_path: Path, s3: S3) -> None:
    source, replicas = folders(tmp_path)
    database = source / "big.db"
    committed = {database: big_database(database, 24)}
    prefix = "big"
    where = remote_prefix(prefix, source, database)
    client = make_client(s3.target())
    # Each request a little slow, so the 5 parts of the snapshot take long enough to kill between.
    with faulty_proxy(s3.server.port, delay=0.3) as proxy:
        pool = Pool(tmp_path, [], extra_config=remote_config(
            source, replicas, s3, prefix, proxy.endpoint,
            shipper=f"multipart_threshold = {1 << 20}\npart_size = {5 << 20}\n"))
        try:
            def uploading() -> bool:
                return bool(client.list_multipart_uploads(Bucket=s3.bucket, Prefix=where + "/").get("Uploads"))
            eventually(uploading, timeout=60, what="a multipart upload in flight", pool=pool)
            before = pool.pid_of("shipper")
            os.kill(before, signal.SIGKILL)
            assert not [key for key in s3.keys(where + "/0009/")], "the snapshot is no object before completion"
            pool.wait_for(r"shipper restarted \(pid \d+\)", timeout=30)
            assert pool.pid_of("shipper") != before
            wait_restores(committed, source, replicas)
            wait_shipped(s3, prefix, source, replicas, [database], pool, timeout=120)
            taken = [line for line in pool.lines if f"shipping to s3://{s3.bucket}/{where} (lease taken)" in line]
            assert len(taken) == 2, "the restarted shipper took the pool's own lease back at once"
            eventually(lambda: not client.list_multipart_uploads(Bucket=s3.bucket, Prefix=where + "/").get("Uploads"),
                       timeout=30, what="the killed upload aborted", pool=pool)
            # Idle costs no request: the level directories did not move, the lease is not due.
            time.sleep(1.5)
            idle_from = proxy.counts["forwarded"]
            time.sleep(2.0)
            assert proxy.counts["forwarded"] == idle_from, "an idle replica costs the shipper no request"
            assert pool.stop() == 0
        finally:
            pool.kill()
    assert restored_from_bucket(s3, where, tmp_path / "restored.db") == committed[database]
    assert_no_partial_object(s3, prefix, source, replicas, [database])


def test_a_second_pool_on_the_same_prefix_refuses_naming_the_holder_and_the_first_keeps_shipping(
    tmp_path: Path, s3: S3,
) -> None:
    first_dir, second_dir = tmp_path / "a", tmp_path / "b"
    first_dir.mkdir()
    second_dir.mkdir()
    (source_a, replicas_a), (source_b, replicas_b) = folders(first_dir), folders(second_dir)
    database_a, database_b = source_a / "app.db", source_b / "app.db"
    committed = {database_a: create_database(database_a, rows=2)}
    create_database(database_b, rows=3)
    first = Pool(first_dir, [], extra_config=remote_config(source_a, replicas_a, s3, "shared"))
    second = None
    try:
        first.wait_for(r"shipping to s3://\S+/shared/app.db \(lease taken\)", timeout=30)
        second = Pool(second_dir, [], extra_config=remote_config(source_b, replicas_b, s3, "shared"))
        refused = second.wait_for(r"refusing to ship to s3://\S+/shared/app\.db: .*held by (\S+) ", timeout=30)
        holder = refused.group(1)
        assert holder.split(":")[1] == str(first.process.pid), "the holder named is the first pool"
        with Writers([database_a], committed, pause=0.05):
            time.sleep(2)
        wait_restores(committed, source_a, replicas_a)
        wait_shipped(s3, "shared", source_a, replicas_a, [database_a], first)
        assert second.process.poll() is None, "the refused pool goes on (its replication still runs)"
        assert not any("lease taken" in line for line in second.lines)
        assert first.stop() == 0
        assert second.stop() == 0
    finally:
        first.kill()
        if second is not None:
            second.kill()
    assert restored_from_bucket(s3, "shared/app.db", tmp_path / "restored.db") == committed[database_a]


RETAIN_NOTHING = "\n[retention]\nlevels = { 0 = 0, 1 = 0, 2 = 0, 3 = 0 }\nsnapshots = 0\n"


def level_zero_txids(replica: str) -> set[int]:
    return {txid for f in Replica(replica).list_level(0).files for txid in range(f.min_txid, f.max_txid + 1)}


@dataclass
class _Run:
    """One of two pools side by side: a pool, its folders and its one database's oracle."""

    pool: Pool
    source: Path
    replicas: Path
    database: Path
    committed: dict[Path, set[int]]


@contextlib.contextmanager
def _pools_written(tmp_path: Path, configs: dict[str, Callable[[Path, Path], str]]) -> Iterator[dict[str, _Run]]:
    """One pool per ``configs`` entry (its config from its own folders), each with one database
    an app commits to for 4 s; yields once every pool restores what was committed, kills them after."""
    runs = {}
    for name, config in configs.items():
        base = tmp_path / name
        base.mkdir()
        source, replicas = folders(base)
        database = source / "app.db"
        committed = {database: create_database(database, rows=1)}
        runs[name] = _Run(Pool(base, [], extra_config=config(source, replicas) + RETAIN_NOTHING), source, replicas,
                          database, committed)
    writers = [Writers([run.database], run.committed, pause=0.05) for run in runs.values()]
    try:
        for writer in writers:
            writer.__enter__()
        time.sleep(4)
        for writer in writers:
            writer.stop()
        for run in runs.values():
            wait_restores(run.committed, run.source, run.replicas)
        yield runs
    finally:
        for writer in writers:
            writer.stop()
        for run in runs.values():
            run.pool.kill()


def test_with_the_bucket_unreachable_local_retention_keeps_every_file_and_without_a_remote_it_deletes(
    tmp_path: Path, s3: S3,
) -> None:
    """Control in the same run: the same pool without ``[databases.remote]`` removes level-0 files."""
    # Every connection to the first pool's endpoint is reset, so each request of its shipper fails
    # at once on any network (a port nothing listens on is refused on one host, dropped on another).
    proxy = faulty_proxy(s3.server.port, share=1.0, faults=("reset",))
    configs = {"unreachable": lambda source, replicas: remote_config(source, replicas, s3, "gone",
                                                                     unreachable.endpoint),
               "control": lambda source, replicas: remote_config(source, replicas, s3, "x").split(
                   "\n[databases.remote]")[0]}
    seen = {}
    with proxy as unreachable, _pools_written(tmp_path, configs) as runs:
        time.sleep(2)  # a few janitor rounds (every 0.3 s) with every file past its retention age
        for name, run in runs.items():
            replica = replica_of(run.source, run.replicas, run.database)
            newest = max(f.max_txid for listing in Replica(replica).list_all().values() for f in listing.files)
            seen[name] = (level_zero_txids(replica), newest)
            if name == "unreachable":
                # The first failure is reported once its step gave up: 6 whole-step tries, each
                # after botocore's own attempts with backoff, a few seconds.
                run.pool.wait_for(r"refusing to ship|shipping to .* failed", timeout=60)
                assert read_shipped(Replica(replica)) == set()
        for run in runs.values():
            assert run.pool.stop() == 0
    kept, newest = seen["unreachable"]
    assert newest > 8 and kept == set(range(2, newest + 1)), (
        f"the bucket lacks them: every level-0 file since the first snapshot stays ({sorted(kept)}, newest {newest})")
    left, control_newest = seen["control"]
    assert control_newest > 8 and len(left) <= 2, f"control: retention removed the level-0 files ({sorted(left)} left)"
    record("level-0 TXIDs kept, bucket unreachable / control", f"{len(kept)} / {len(left)}")


#: ``ltxpool supervise`` with the shipper's per-attempt news (``still_busy``) switched off: the control.
_SILENT_SHIPPER = ("import sys; from ltxpool.pool.child import ChildLink; "
                   "ChildLink.still_busy = lambda self: None; "
                   "from ltxpool.cli import main; sys.exit(main(sys.argv[1:]))")


def test_a_shipper_retrying_a_store_that_fails_slowly_is_not_killed_as_hung_and_reports_the_failure(
    tmp_path: Path, s3: S3,
) -> None:
    """Every request fails after 0.5 s, so one step is some 30 attempts, 15 s at the least: past
    a 12 s ``hang_timeout``, while the longest silence between two attempts, one attempt and
    botocore's backoff (up to 8 s before its 4th retry in botocore before 1.44, far less after),
    is inside it; the supervisor warns that 12 s is under a shipper's bound for a real store.
    Control in the same run: the same pool whose shipper does not say it is alive between
    attempts is killed as hung, again and again, and never reports why it cannot ship."""
    pools = {}
    with faulty_proxy(s3.server.port, share=1.0, faults=("reset",), delay=0.5) as store:
        for name, command in (("heartbeat", (sys.executable, "-m", "ltxpool.cli")),
                              ("control", (sys.executable, "-c", _SILENT_SHIPPER))):
            base = tmp_path / name
            base.mkdir()
            source, replicas = folders(base)
            create_database(source / "app.db", rows=1)
            pools[name] = Pool(base, [], hang_timeout=12.0, command=command,
                               extra_config=remote_config(source, replicas, s3, name, store.endpoint))
        try:
            pools["control"].wait_for(r"shipper \(pid \d+\) silent for \d+ s while shipping", timeout=60)
            # botocore before 1.44: six tries of about 10 s each, the last one starting by 60 s.
            pools["heartbeat"].wait_for(r"shipping to s3://\S+ failed: .*ConnectionClosedError", timeout=150)
            pools["heartbeat"].wait_for(r"hang_timeout 12 s <= 83 s, the longest a shipper waits")
            kills, reports = {}, {}
            for name, pool in pools.items():
                kills[name] = sum("silent for" in line for line in pool.lines)
                reports[name] = sum(bool(re.search(r"shipping to s3://\S+ failed", line)) for line in pool.lines)
                record(f"slowly failing store, {name}: hang kills / failures reported",
                       f"{kills[name]} / {reports[name]}")
            assert kills["heartbeat"] == 0, "the shipper said it was alive before every attempt"
            assert kills["control"] >= 1 and reports["control"] == 0, (
                "control: killed as hung before its step could give up and say why")
            assert pools["heartbeat"].stop() == 0
        finally:
            for pool in pools.values():
                pool.kill()


def test_remote_retention_deletes_what_local_retention_deleted_and_the_bucket_still_restores(
    tmp_path: Path, s3: S3,
) -> None:
    """Control in the same run: a pool that lists the bucket only hourly has deleted nothing there yet."""
    configs = {name: (lambda source, replicas, name=name, relist=relist: remote_config(
        source, replicas, s3, name, shipper=f"relist_interval = {relist}\n"))
        for name, relist in (("pruned", 1), ("control", 3600))}

    def level_zero_objects(name: str) -> int:
        run = runs[name]
        return len(s3.keys(f"{remote_prefix(name, run.source, run.database)}/0000/"))

    with _pools_written(tmp_path, configs) as runs:
        for name, run in runs.items():
            wait_shipped(s3, name, run.source, run.replicas, [run.database], run.pool)
        eventually(lambda: level_zero_objects("pruned") <= 2, timeout=20,
                   what="remote retention of the level-0 objects", pool=runs["pruned"].pool)
        runs["pruned"].pool.wait_for(r"remote retention deleted \d+ objects from s3://")
        for run in runs.values():
            assert run.pool.stop() == 0
    assert level_zero_objects("control") > 8, "control: the bucket kept every level-0 object"
    for name, run in runs.items():
        where = remote_prefix(name, run.source, run.database)
        assert restored_from_bucket(s3, where, tmp_path / f"{name}.db") == run.committed[run.database], name
        assert_no_partial_object(s3, name, run.source, run.replicas, [run.database])
    record("remote level-0 objects after retention / control",
           f"{level_zero_objects('pruned')} / {level_zero_objects('control')}")


def _start_moto(port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    wait_until_up(f"http://127.0.0.1:{port}", process)
    return process


def test_a_restarted_server_gets_every_file_again_and_nothing_is_lost(tmp_path: Path, s3: S3) -> None:
    """The S3 server is SIGKILLed while the app commits and the pool ships, and comes back empty
    (moto keeps nothing: the worst a restart can do): the shipper's errors back off, its next
    full listing finds the bucket bare, and it ships every local file again; every database
    then restores from the bucket to exactly its committed rows."""
    port = free_port()
    server = _start_moto(port)
    own = S3(S3Server(f"http://127.0.0.1:{port}", server), s3.bucket, f"http://127.0.0.1:{port}")
    own.client().create_bucket(Bucket=own.bucket)
    source, replicas = folders(tmp_path)
    committed = five_databases(source)
    pool = Pool(tmp_path, [], extra_config=remote_config(source, replicas, own, "tenants"))
    try:
        wait_shipped(own, "tenants", source, replicas, list(committed), pool)
        with Writers(list(committed), committed, pause=0.05):
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
            time.sleep(3)
            server = _start_moto(port)
            own.client().create_bucket(Bucket=own.bucket)
            time.sleep(1)
        wait_restores(committed, source, replicas)
        wait_shipped(own, "tenants", source, replicas, list(committed), pool, timeout=90)
        for index, database in enumerate(committed):
            where = remote_prefix("tenants", source, database)
            assert restored_from_bucket(own, where, tmp_path / f"from-bucket-{index}.db") == committed[database]
        assert pool.stop() == 0
    finally:
        pool.kill()
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
    assert any("ERROR" in line and "ship" in line for line in pool.lines), "the server's absence was seen"
