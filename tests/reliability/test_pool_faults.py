"""A fault on one replica: the worker and the janitor go on serving the others and retry it.

The real role loops (``ltxpool.pool.roles.worker_main`` and ``janitor_main``) run in a
thread with a stand-in for the supervisor link; faults (EIO, ENOSPC, EDQUOT, EACCES,
EROFS, EMFILE, one per replica, each at a different step) are injected only into
that thread, so the test's own producer keeps writing level-0 files into every
replica. While the faults last, each faulty replica must fail with its errno named
on one log line and be retried later each time (exponential backoff); the healthy
replica must keep being compacted and cleaned. Once the faults go, everything
compacts and restores to the source.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from ltxpool.errors import LtxpoolError
from ltxpool.pool.events import Busy, Compacted, CompactionFailed, Event, JanitorFailed, JanitorReported, JanitorRound
from ltxpool.pool.config import PoolConfig
from ltxpool.pool.roles import janitor_main, worker_main
from ltxpool.replica.atomic import temp_name_for
from ltxpool.replica.compactor import CompactionSettings, compaction_pass
from ltxpool.replica.janitor import JanitorSettings
from ltxpool.replica.layout import Replica
from ltxpool.replica.restore import restore
from tests.support.fault_counts import record
from tests.support.helpers import path_of
from tests.support.synthetic import SyntheticStream


class Link:
    """What a role needs from the supervisor link: events kept with their time, a stop after ``seconds``."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.events: list[tuple[float, Event]] = []

    @property
    def stopping(self) -> bool:
        return time.monotonic() >= self.deadline

    def send(self, event: Event) -> None:
        self.events.append((time.monotonic(), event))

    @property
    def parent(self) -> int:
        return os.getppid()

    def busy(self, what: str, lag: float = 0.0, replica: str = "") -> None:
        self.send(Busy(what, lag, replica))

    def sleep(self, seconds: float, wake_on: Sequence[int] = ()) -> None:
        time.sleep(max(0.0, min(seconds, self.deadline - time.monotonic())))


class ThreadFaults:
    """Faults that fire only in one thread (the role's), each for the paths of one replica."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch
        self.thread: int | None = None
        self.rules: dict[str, list[tuple[int, Callable[[str], bool], str]]] = {}
        self.hits: Counter[str] = Counter()

    def add(self, function: str, code: int, applies: Callable[[str], bool], label: str) -> None:
        if function not in self.rules:
            self.rules[function] = []
            real = getattr(os, function)

            def faulty(*args: Any, _name: str = function, _real: Any = real, **kwargs: Any) -> Any:
                if threading.get_ident() == self.thread:
                    path = path_of(args, kwargs)
                    for rule_code, rule_applies, rule_label in self.rules[_name]:
                        if rule_applies(path):
                            self.hits[rule_label] += 1
                            raise OSError(rule_code, os.strerror(rule_code))
                return _real(*args, **kwargs)

            self.monkeypatch.setattr(os, function, faulty)
        self.rules[function].append((code, applies, label))

    def run(self, target: Callable[..., None], *args: Any) -> threading.Thread:
        def body() -> None:
            self.thread = threading.get_ident()
            target(*args)

        thread = threading.Thread(target=body)
        thread.start()
        return thread


def under(root: str, suffix: str = "", level_above_zero: bool = False) -> Callable[[str], bool]:
    def applies(path: str) -> bool:
        if not path.startswith(root + os.sep) or not path.endswith(suffix):
            return False
        return not level_above_zero or f"{os.sep}ltx{os.sep}0" not in path
    return applies


#: replica name -> (os function, errno, which of its paths fail, the step the error names)
WORKER_FAULTS = {
    "eio-write": ("write", errno.EIO, ".tmp", "write"),
    "enospc-fsync": ("fsync", errno.ENOSPC, ".tmp", "fsync"),
    "edquot-rename": ("rename", errno.EDQUOT, ".tmp", "rename"),
    "eacces-input": ("open", errno.EACCES, ".ltx", "open"),
    "erofs-create": ("open", errno.EROFS, ".tmp", "create"),
    "emfile-claim": ("open", errno.EMFILE, ".ltxpool.claim", "open lock file"),
}
FAST = CompactionSettings(intervals={1: 0.05, 2: 0.2, 3: 0.4}, snapshot_interval=0.6)
POLL = 0.02


def failures_by_root(
    events: list[tuple[float, Event]], kind: type[CompactionFailed | JanitorFailed],
) -> dict[str, list[tuple[float, BaseException]]]:
    found: dict[str, list[tuple[float, BaseException]]] = {}
    for at, event in events:
        if isinstance(event, kind):
            found.setdefault(event.replica, []).append((at, event.error))
    return found


def test_a_worker_retries_each_failing_replica_with_backoff_and_keeps_compacting_the_healthy_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ltxpool")
    streams = {name: SyntheticStream(Replica(tmp_path / name), seed=i) for i, name in
               enumerate(["healthy", *WORKER_FAULTS])}
    for stream in streams.values():
        stream.run(2)
    faults = ThreadFaults(monkeypatch)
    for name, (function, code, suffix, _) in WORKER_FAULTS.items():
        input_side = suffix == ".ltx"
        faults.add(function, code, under(streams[name].replica.root, suffix, level_above_zero=not input_side), name)
    config = PoolConfig(replicas=tuple(s.replica.root for s in streams.values()), workers=1, compaction=FAST,
                        poll_interval=POLL)
    link = Link(2.5)
    worker = faults.run(worker_main, link, 0, config, {})
    while worker.is_alive():
        for stream in streams.values():
            stream.transaction()
        time.sleep(0.02)
    worker.join()
    monkeypatch.undo()

    failed = failures_by_root(link.events, CompactionFailed)
    for name, (_, code, _, step) in WORKER_FAULTS.items():
        root = streams[name].replica.root
        attempts = failed.get(root, [])
        assert len(attempts) >= 3, f"{name}: {len(attempts)} attempts"
        for _, error in attempts:
            assert isinstance(error, LtxpoolError) and (error.step, error.errno) == (step, code), (name, error)
            assert error.path.startswith(root)
        # Backoff: after the n-th failure in a row the next attempt waits at least poll * 2**n.
        gaps = [later - earlier for (earlier, _), (later, _) in zip(attempts, attempts[1:])]
        for failures, gap in enumerate(gaps, start=1):
            assert gap >= 0.99 * POLL * 2 ** failures, f"{name}: retried after {gap:.3f} s: {gaps}"
        lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"{root}: compaction failed:")]
        assert len(lines) == len(attempts) and all("\n" not in line for line in lines)
        delays = [float(m.group(1)) for line in lines if (m := re.search(r"retry in ([\d.]+) s", line))]
        assert len(delays) == len(lines) and delays == sorted(delays), (name, delays)
        assert faults.hits[name] >= len(attempts)
    healthy = streams["healthy"].replica.root
    assert healthy not in failed
    first_faults_done = max(attempts[0][0] for attempts in failed.values())
    served_after = [at for at, event in link.events
                    if isinstance(event, Compacted) and event.result.replica == healthy and at > first_faults_done]
    assert len(served_after) >= 3, "the healthy replica was not served while the others failed"

    settings = CompactionSettings(intervals={1: 0.0, 2: 0.0, 3: 0.0}, snapshot_interval=0.0)
    for name, stream in streams.items():
        compaction_pass(stream.replica, settings, time.time())
        assert stream.replica.list_level(1).files, name
        out = tmp_path / f"{name}.db"
        restore(stream.replica, out, check_integrity=False)
        assert out.read_bytes() == stream.images[stream.txid], name
    record("pool: worker faults, one replica per errno", sum(len(a) for a in failed.values()),
           per_replica={name: len(failed[streams[name].replica.root]) for name in WORKER_FAULTS},
           healthy_compactions_meanwhile=len(served_after))


JANITOR_FAULTS = {
    "eio-unlink": ("unlink", errno.EIO, ".tmp", "unlink temp file"),
    "eacces-list": ("scandir", errno.EACCES, os.path.join("ltx", "0"), "list level directory"),
    "emfile-lock": ("open", errno.EMFILE, ".ltxpool.lock", "open lock file"),
}


def test_a_janitor_goes_on_with_the_other_replicas_and_cleans_the_failing_one_once_the_fault_is_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ltxpool")
    streams = {name: SyntheticStream(Replica(tmp_path / name), seed=i) for i, name in
               enumerate(["healthy", *JANITOR_FAULTS])}
    orphans = {}
    for name, stream in streams.items():
        stream.run(2)
        orphans[name] = Path(stream.replica.level_dir(0)) / temp_name_for("0000000000000009-0000000000000009.ltx")
        orphans[name].write_bytes(b"left by a crashed writer")
    faults = ThreadFaults(monkeypatch)
    for name, (function, code, suffix, _) in JANITOR_FAULTS.items():
        faults.add(function, code, under(streams[name].replica.root, suffix), name)
    config = PoolConfig(replicas=tuple(s.replica.root for s in streams.values()), janitor=JanitorSettings(),
                        janitor_interval=0.1)
    link = Link(0.6)
    faults.run(janitor_main, link, config, {}).join()
    monkeypatch.undo()

    failed = failures_by_root(link.events, JanitorFailed)
    rounds = sum(1 for _, event in link.events if isinstance(event, JanitorRound))
    assert rounds >= 3
    for name, (_, code, _, step) in JANITOR_FAULTS.items():
        attempts = failed.get(streams[name].replica.root, [])
        assert len(attempts) == rounds, f"{name}: retried in {len(attempts)} of {rounds} rounds"
        assert all((e.step, e.errno) == (step, code) for _, e in attempts), (name, attempts)
        assert orphans[name].exists()
        lines = [r.getMessage() for r in caplog.records
                 if r.getMessage().startswith(f"{streams[name].replica.root}: janitor round failed:")]
        assert len(lines) == rounds
    assert not orphans["healthy"].exists()
    assert [e for _, e in link.events if isinstance(e, JanitorReported) and e.report.replica == streams["healthy"].replica.root]

    link = Link(0.25)
    janitor_main(link, config, {})
    assert not failures_by_root(link.events, JanitorFailed)
    assert not any(path.exists() for path in orphans.values())
    record("pool: janitor faults, one replica per errno", sum(len(a) for a in failed.values()), rounds=rounds)
