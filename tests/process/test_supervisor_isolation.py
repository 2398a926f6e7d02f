"""One stuck replica, or a fork the kernel refuses, never takes the pool down (issue 13).

Real pools (``ltxpool supervise``), real flocks held by a process that is no worker
of the pool, a real task limit (RLIMIT_NPROC) on a real unprivileged user. Each
protection is switched off in the same test to show the same attack then succeeds.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ltxpool.locks.dirlock import holders_in, lock_file_names
from ltxpool.replica.layout import Replica
from tests.process.test_supervisor import Pool, eventually, level_max_txid, streams
from tests.support.fault_counts import record
from tests.support.synthetic import SyntheticStream
from tests.support.users import User


@pytest.fixture
def stranger() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes that hold a lock forever: flock(1), no worker of any pool, in their own session."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def hold_gate(replica: Replica, level: int, started: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    directory = replica.ensure_level_dir(level)
    gate = os.path.join(directory, lock_file_names()[0])
    os.close(os.open(gate, os.O_RDWR | os.O_CREAT, 0o600))
    holder = subprocess.Popen(["flock", "--close", gate, "sleep", "600"], start_new_session=True)
    started.append(holder)
    eventually(lambda: bool(holders_in(directory)), what="the stranger's flock")
    return holder


def test_a_stranger_holding_one_replicas_lock_is_named_in_the_log_and_the_other_replica_goes_on(
    tmp_path: Path, stranger: list[subprocess.Popen[bytes]]
) -> None:
    """Deadline 0.5 s, hang timeout 3 s: the worker names the holder and backs off that replica.

    Control, same run: a lock wait longer than the hang timeout (as before #13, when
    it was endless): no line ever names the holder, the workers are killed as hung.
    """
    for name, lock_timeout in (("protected", 0.5), ("control", 30.0)):
        base = tmp_path / name
        base.mkdir()
        stuck, healthy = streams(base, 2)
        holder = hold_gate(stuck.replica, 1, stranger)
        pool = Pool(base, [stuck.replica, healthy.replica], hang_timeout=3.0, lock_timeout=lock_timeout,
                    crash_loop_restarts=100)
        try:
            eventually(lambda healthy=healthy: level_max_txid(healthy.replica, 1) == 3, what="the healthy replica compacted")
            named = (rf"{re.escape(stuck.replica.level_dir(1))}: writing: busy, gave up after \d+\.\d ms; "
                     rf"held by pid {holder.pid} \(user root, uid 0, command flock, WRITE\)")
            if name == "protected":
                pool.wait_for(rf"ERROR worker-\d\[\d+\] {re.escape(stuck.replica.root)}: compaction failed: {named} "
                              r"\(retry in \d+ s\)")
                healthy.run(2)
                eventually(lambda healthy=healthy: level_max_txid(healthy.replica, 1) == 5, what="the healthy replica again")
                assert not any("silent for" in line for line in pool.lines), pool.lines
                assert pool.process.poll() is None
                assert pool.stop() == 0
            else:
                pool.wait_for(rf"silent for \d s while compacting {re.escape(stuck.replica.root)}: killing it")
                assert not any(re.search(named, line) for line in pool.lines)
                assert pool.stop() == 0
        finally:
            pool.kill()
        failures = sum("compaction failed" in line for line in pool.lines)
        record(f"stranger holds one replica's lock ({name})", failures, lines=len(pool.lines))


def test_deaths_on_one_replica_are_charged_to_it_and_never_make_a_crash_loop(
    tmp_path: Path, stranger: list[subprocess.Popen[bytes]]
) -> None:
    """Worker after worker is killed as hung on the stuck replica (lock wait > hang timeout).

    Isolated: each death holds that replica off (1, 2, 4 ... s) and restarts the
    worker; crash_loop_restarts = 1 is never reached, the other replica is compacted.
    Control, same run: ``isolate_replicas = false``: the same deaths are a crash loop,
    and the pool exits 1 for every replica.
    """
    for name, isolate in (("isolated", True), ("control", False)):
        base = tmp_path / name
        base.mkdir()
        stuck, healthy = streams(base, 2)
        hold_gate(stuck.replica, 1, stranger)
        pool = Pool(base, [stuck.replica, healthy.replica], "--workers", "1", hang_timeout=1.0,
                    crash_loop_restarts=1, isolate_replicas=isolate)
        try:
            if isolate:
                for death in range(3):
                    pool.wait_for(rf"worker-0 \(pid \d+\) died \(killed by SIGKILL: hung on compacting "
                                  rf"{re.escape(stuck.replica.root)}\); charged to replica "
                                  rf"{re.escape(stuck.replica.root)}, held off for {2 ** death:.1f} s, not to the pool",
                                  timeout=30)
                eventually(lambda healthy=healthy: level_max_txid(healthy.replica, 1) == 3, timeout=30,
                           what="the healthy replica compacted between the deaths")
                assert pool.process.poll() is None
                assert pool.stop() == 0
            else:
                assert pool.process.wait(30) == 1
                pool._reader.join(5)
                pool.wait_for(r"giving up: worker-0 crashed 2 times within 60 s \(last: killed by SIGKILL: hung on "
                              rf"compacting {re.escape(stuck.replica.root)}\)")
        finally:
            pool.kill()
        record(f"deaths on one replica ({name})", sum("died" in line for line in pool.lines))


# --- a fork the kernel refuses ----------------------------------------------------------

#: The same fork, bare: what the supervisor did before (Process.start's OSError was fatal).
BARE_FORK = ("import multiprocessing, time; p = multiprocessing.get_context('fork').Process(target=time.sleep, "
             "args=(0,)); p.start(); p.join()")
LIMIT = 48


def tasks_of(uid: int) -> int:
    """How many tasks (threads) ``uid`` runs now: what RLIMIT_NPROC counts."""
    count = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/status") as status:
                fields = dict(line.split(":", 1) for line in status if ":" in line)
        except OSError:
            continue
        if int(fields["Uid"].split()[0]) == uid:
            count += int(fields["Threads"])
    return count


def as_tenant(tenant: User, argv: list[str], limit: int) -> list[str]:
    return ["setpriv", f"--reuid={tenant.uid}", f"--regid={tenant.gid}", "--clear-groups",
            "prlimit", f"--nproc={limit}:{limit}", "--", *argv]


def test_a_refused_fork_is_retried_with_backoff_and_the_pool_recovers(
    shared_tmp: str, tenant: User, ltxpool_for_others: list[str],
) -> None:
    """The tenant's pool runs under RLIMIT_NPROC; other tasks of the tenant use it all up.

    A killed worker then cannot be forked again: the supervisor logs EAGAIN and retries
    with backoff; once the tasks are gone the worker is back and compacts. Control,
    same run, same limit, same tasks: a bare fork (what the supervisor did before)
    dies of the EAGAIN.
    """
    if shutil.which("setpriv") is None or shutil.which("prlimit") is None:
        pytest.skip("needs util-linux setpriv and prlimit")
    base = Path(shared_tmp)
    source = SyntheticStream(Replica(base / "replica"), seed=1)
    source.run(3)
    subprocess.run(["chown", "-R", f"{tenant.uid}:{tenant.gid}", str(base)], check=True)
    # The limit counts every task of the user, so it is set above what the tenant already runs.
    limit = tasks_of(tenant.uid) + LIMIT
    pool = Pool(base, [source.replica], "--workers", "2",
                command=as_tenant(tenant, ltxpool_for_others, limit), name="pool.toml")
    fillers: list[subprocess.Popen[bytes]] = []
    try:
        eventually(lambda: level_max_txid(source.replica, 1) == 3, timeout=30, what="first compaction", pool=pool)
        victim = pool.pid_of("worker-1")
        while tasks_of(tenant.uid) < limit + 8:
            fillers.append(subprocess.Popen(["sleep", "600"], user=tenant.uid, group=tenant.gid, extra_groups=[]))
        control = subprocess.run(as_tenant(tenant, ["/usr/bin/python3", "-c", BARE_FORK], limit),
                                 capture_output=True, text=True, timeout=30)
        assert control.returncode == 1 and "BlockingIOError: [Errno 11]" in control.stderr, control
        mark = len(pool.lines)
        os.kill(victim, signal.SIGKILL)
        for failures in (1, 2):
            pool.wait_for(rf"ERROR supervisor\[\d+\] could not start worker-1: worker-1: fork: Resource temporarily "
                          rf"unavailable \[EAGAIN\] \(failed {failures} times in a row; retrying in", mark, timeout=30)
        assert pool.process.poll() is None
        for filler in fillers:
            filler.kill()
            filler.wait()
        fillers.clear()
        pool.wait_for(r"worker-1: fork succeeded after \d+ failures", mark, timeout=30)
        pool.wait_for(r"worker-1 restarted \(pid \d+\)", mark, timeout=30)
        source.run(2)
        subprocess.run(["chown", "-R", f"{tenant.uid}:{tenant.gid}", str(base)], check=True)
        eventually(lambda: level_max_txid(source.replica, 1) == 5, timeout=30, what="compaction after recovery",
                   pool=pool)
        assert pool.stop() == 0
    finally:
        for filler in fillers:
            filler.kill()
            filler.wait()
        pool.kill()
    record("refused forks retried", sum("could not start" in line for line in pool.lines))
