"""DatabaseWatch on real folders, real SQLite databases (made by the ``sqlite3`` command, ``cp``
and rename) and real inotify: what it finds, how soon, what it never follows, what idling costs."""

from __future__ import annotations

import glob
import os
import select
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from inotify_simple import INotify, flags, parse_events

from ltxpool.discovery import Changes, DatabaseDir, DatabaseFile, DatabaseWatch, Target
from tests.support.helpers import make_sqlite_database

#: Far below the 5 s the pool promises: an event-driven watcher answers in milliseconds.
PROMPT = 1.0


class Seen:
    """Changes collected from a watcher until a condition holds, and how long that took."""

    def __init__(self) -> None:
        self.added: dict[str, Target] = {}
        self.removed: set[str] = set()
        self.changed: set[str] = set()

    def take(self, changes: Changes) -> None:
        self.added.update((target.database, target) for target in changes.added)
        self.removed.update(changes.removed)
        self.changed.update(changes.changed)


def wait_for(watch: DatabaseWatch, done: Callable[[Seen], bool], timeout: float = 5.0) -> tuple[Seen, float]:
    """select on the watcher's fd and read until ``done``; the seconds it took (timeout: +inf)."""
    seen = Seen()
    start = time.monotonic()
    while not done(seen):
        remaining = start + timeout - time.monotonic()
        if remaining <= 0:
            return seen, float("inf")
        select.select([watch.fileno()], [], [], remaining)
        seen.take(watch.read())
    return seen, time.monotonic() - start


def sqlite3_command(path: str, sql: str = "CREATE TABLE t (x); INSERT INTO t VALUES (1);") -> None:
    subprocess.run(["sqlite3", path, sql], check=True, capture_output=True, timeout=30)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """root/ with databases two levels deep, and everything that must not count."""
    root = tmp_path / "root"
    (root / "a" / "b").mkdir(parents=True)
    make_sqlite_database(root / "top.db")
    make_sqlite_database(root / "a" / "one.db", wal=True)
    make_sqlite_database(root / "a" / "b" / "two.db")
    (root / "a" / "notes.txt").write_text("not a database")
    (root / "a" / "empty.db").touch()
    (root / "a" / "text.db").write_text("SQLite? no")
    (root / "a" / "b" / "two.db-wal").write_bytes(b"SQLite format 3\x00" + bytes(100))
    (root / "a" / "b" / "two.db-journal").write_bytes(b"SQLite format 3\x00" + bytes(100))
    os.mkfifo(root / "a" / "pipe.db")
    outside = tmp_path / "outside"
    outside.mkdir()
    make_sqlite_database(outside / "secret.db")
    (root / "a" / "linked").symlink_to(outside, target_is_directory=True)
    (root / "alias.db").symlink_to(root / "top.db")
    return root


def entry_of(root: Path, *, recursive: bool = True) -> DatabaseDir:
    return DatabaseDir(str(root), str(root.parent / "replicas"), recursive=recursive)


@pytest.fixture
def watch_of() -> Iterator[Callable[..., DatabaseWatch]]:
    made: list[DatabaseWatch] = []

    def make(*entries: DatabaseDir | DatabaseFile, owns: Callable[[str], bool] = lambda path: True) -> DatabaseWatch:
        watch = DatabaseWatch(entries, owns=owns)
        made.append(watch)
        return watch

    yield make
    for watch in made:
        watch.close()


@pytest.mark.timeout(60)
def test_start_finds_exactly_the_databases_and_never_follows_a_link(tree: Path, watch_of) -> None:
    watch = watch_of(entry_of(tree))
    found = watch.start()
    assert sorted(found) == [str(tree / "a" / "b" / "two.db"), str(tree / "a" / "one.db"), str(tree / "top.db")]
    assert found[str(tree / "a" / "one.db")].replica == str(tree.parent / "replicas" / "a" / "one.db")
    assert watch.watches == 3  # root, a, a/b: not a/linked
    # The control: a naive recursive glob over the same tree does reach the outside database.
    naive = glob.glob(str(tree / "**" / "*.db"), recursive=True)
    assert str(tree / "a" / "linked" / "secret.db") in naive
    assert str(tree / "alias.db") in naive


@pytest.mark.timeout(60)
def test_databases_made_by_sqlite3_cp_and_rename_are_added_promptly(tree: Path, tmp_path: Path, watch_of) -> None:
    watch = watch_of(entry_of(tree))
    watch.start()
    made = str(tree / "a" / "made.db")
    sqlite3_command(made)
    _, took = wait_for(watch, lambda seen: made in seen.added)
    assert took < PROMPT

    copied = str(tree / "a" / "b" / "copied.db")
    subprocess.run(["cp", str(tree / "top.db"), copied], check=True)
    _, took = wait_for(watch, lambda seen: copied in seen.added)
    assert took < PROMPT

    staged = make_sqlite_database(tmp_path / "staged.db")
    renamed = str(tree / "renamed.db")
    os.rename(staged, renamed)
    _, took = wait_for(watch, lambda seen: renamed in seen.added)
    assert took < PROMPT
    assert set(watch.known) >= {made, copied, renamed}


@pytest.mark.timeout(60)
def test_deleted_and_moved_away_databases_are_removed_and_the_others_stay(tree: Path, tmp_path: Path,
                                                                           watch_of) -> None:
    watch = watch_of(entry_of(tree))
    watch.start()
    os.unlink(tree / "top.db")
    os.rename(tree / "a" / "one.db", tmp_path / "moved-away.db")
    gone = {str(tree / "top.db"), str(tree / "a" / "one.db")}
    seen, took = wait_for(watch, lambda seen: seen.removed >= gone)
    assert took < PROMPT
    assert seen.removed == gone
    assert set(watch.known) == {str(tree / "a" / "b" / "two.db")}


@pytest.mark.timeout(60)
def test_a_moved_away_folder_takes_its_databases_and_watches_with_it(tree: Path, tmp_path: Path, watch_of) -> None:
    watch = watch_of(entry_of(tree))
    watch.start()
    os.rename(tree / "a", tmp_path / "elsewhere")
    gone = {str(tree / "a" / "one.db"), str(tree / "a" / "b" / "two.db")}
    _, took = wait_for(watch, lambda seen: seen.removed >= gone)
    assert took < PROMPT
    assert watch.watches == 1
    # Writes in the folder moved away are no longer reported, under any path.
    make_sqlite_database(tmp_path / "elsewhere" / "later.db")
    assert not watch.read()


@pytest.mark.timeout(60)
def test_a_write_to_the_wal_makes_only_that_database_changed(tree: Path, watch_of) -> None:
    watch = watch_of(entry_of(tree))
    watch.start()
    wal_db, other = str(tree / "a" / "one.db"), str(tree / "top.db")
    # A connection held open here keeps the writer's close from checkpointing: its commit
    # lands in -wal only, so only the -wal's events can tell.
    reader = sqlite3.connect(wal_db)
    reader.execute("SELECT count(*) FROM t").fetchall()
    main_before = os.stat(wal_db).st_mtime_ns
    try:
        sqlite3_command(wal_db, "INSERT INTO t VALUES (2);")
        seen, took = wait_for(watch, lambda seen: wal_db in seen.changed)
        assert os.stat(wal_db).st_mtime_ns == main_before  # the main file was not written
    finally:
        reader.close()
    assert took < PROMPT
    assert other not in seen.changed
    assert not seen.added and not seen.removed


@pytest.mark.timeout(60)
def test_the_pools_own_step_makes_no_change_but_a_commit_does(tree: Path, tmp_path: Path, watch_of) -> None:
    """A replicate step of an idle database (its connection creates, closes and deletes the -wal)
    is reported by the kernel but is no change, or each step would cause the next, for ever."""
    from ltxpool.replicate import Replicator

    watch = watch_of(entry_of(tree))
    watch.start()
    database = str(tree / "a" / "one.db")
    with Replicator(database, tmp_path / "replica") as replicator:
        replicator.step()
    probe = INotify()
    probe.add_watch(str(tree / "a"), flags.CREATE | flags.DELETE | flags.MODIFY | flags.CLOSE_WRITE)
    try:
        watch.read()
        with Replicator(database, tmp_path / "replica") as replicator:
            assert replicator.step() is None
        reported = probe.read(timeout=1000)
        seen, _ = wait_for(watch, lambda seen: False, timeout=0.5)
        assert len(reported) >= 3, "the kernel did report the step's own events"
        assert database not in seen.changed, [(e.name, flags.from_mask(e.mask)) for e in reported]
        sqlite3_command(database, "INSERT INTO t VALUES (3);")
        seen, took = wait_for(watch, lambda seen: database in seen.changed)
        assert took < PROMPT
    finally:
        probe.close()


@pytest.mark.timeout(60)
def test_a_database_made_right_after_its_folder_is_found(tree: Path, watch_of) -> None:
    watch = watch_of(entry_of(tree))
    watch.start()
    expected = set()
    for index in range(20):
        folder = tree / f"new-{index}" / "deeper"
        os.makedirs(folder)  # two levels at once: the second exists before any watch on the first
        expected.add(make_sqlite_database(folder / "fresh.db"))
    _, took = wait_for(watch, lambda seen: set(seen.added) >= expected)
    assert took < PROMPT
    assert watch.watches == 3 + 40


@pytest.mark.timeout(60)
def test_a_symlinked_folder_made_later_is_not_watched_a_real_one_is(tree: Path, tmp_path: Path, watch_of) -> None:
    watch = watch_of(entry_of(tree))
    watch.start()
    (tree / "later-link").symlink_to(tmp_path / "outside", target_is_directory=True)
    real = tree / "later-real"
    real.mkdir()
    in_real = make_sqlite_database(real / "r.db")
    seen, _ = wait_for(watch, lambda seen: in_real in seen.added)
    make_sqlite_database(tmp_path / "outside" / "also-secret.db")
    seen.take(watch.read())
    assert set(seen.added) == {in_real}
    assert watch.watches == 4


@pytest.mark.timeout(60)
def test_an_empty_matching_file_is_added_once_it_has_the_header(tree: Path, watch_of) -> None:
    watch = watch_of(entry_of(tree))
    watch.start()
    path = tree / "slow.db"
    with open(path, "wb") as slow:
        slow.flush()
        seen, _ = wait_for(watch, lambda seen: False, timeout=0.3)
        assert str(path) not in seen.added  # empty: not a database yet
        slow.write((tree / "top.db").read_bytes())
    seen, took = wait_for(watch, lambda seen: str(path) in seen.added)
    assert took < PROMPT


@pytest.mark.timeout(60)
def test_a_database_replaced_by_rename_is_changed_never_lost(tree: Path, watch_of) -> None:
    watch = watch_of(entry_of(tree))
    watch.start()
    target = str(tree / "top.db")
    new = make_sqlite_database(tree / "deploy.tmp")
    os.rename(new, target)
    seen, took = wait_for(watch, lambda seen: target in seen.changed)
    assert took < PROMPT
    assert target not in seen.removed
    assert target in watch.known
    # cp over it truncates then writes: between the two it has no header, and still it stays.
    subprocess.run(["cp", str(tree / "a" / "b" / "two.db"), target], check=True)
    seen, _ = wait_for(watch, lambda seen: target in seen.changed)
    assert target not in seen.removed and target in watch.known


@pytest.mark.timeout(60)
def test_a_named_database_file_is_watched_through_its_folder(tmp_path: Path, watch_of) -> None:
    folder = tmp_path / "app"
    folder.mkdir()
    path = str(folder / "app.db")
    neighbour = str(folder / "other.db")
    watch = watch_of(DatabaseFile(path, str(tmp_path / "replica")))
    assert watch.start() == {}
    make_sqlite_database(neighbour)
    sqlite3_command(path)
    seen, took = wait_for(watch, lambda seen: path in seen.added)
    assert took < PROMPT
    assert neighbour not in seen.added  # the control: same folder, not named
    os.unlink(path)
    seen, _ = wait_for(watch, lambda seen: path in seen.removed)
    assert watch.known == {}


@pytest.mark.timeout(60)
def test_owns_filters_what_is_reported_but_every_folder_is_watched(tree: Path, watch_of) -> None:
    def mine(path: str) -> bool:
        return "mine" in os.path.basename(path)

    watch = watch_of(entry_of(tree), owns=mine)
    control = watch_of(entry_of(tree))
    assert watch.start() == {}
    assert len(control.start()) == 3
    assert watch.watches == control.watches == 3
    made = [make_sqlite_database(tree / "a" / "b" / "mine.db"), make_sqlite_database(tree / "a" / "b" / "yours.db")]
    seen, _ = wait_for(watch, lambda seen: made[0] in seen.added)
    seen.take(watch.read())
    assert set(seen.added) == {made[0]}
    everything, _ = wait_for(control, lambda seen: set(seen.added) >= set(made))
    assert set(everything.added) == set(made)


@pytest.fixture
def small_event_queue() -> Iterator[int]:
    """fs.inotify.max_queued_events lowered to 16 (for instances made now), restored after."""
    path = "/proc/sys/fs/inotify/max_queued_events"
    try:
        with open(path) as limit:
            saved = limit.read()
        with open(path, "w") as limit:
            limit.write("16")
    except OSError as exc:
        pytest.skip(f"cannot lower {path}: {exc.strerror} (needs root)")
    try:
        yield 16
    finally:
        with open(path, "w") as limit:
            limit.write(saved)


@pytest.mark.timeout(60)
def test_an_overflowed_event_queue_is_recovered_by_a_rescan(tree: Path, watch_of, small_event_queue: int,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    watch = watch_of(entry_of(tree))
    watch.start()
    made = {make_sqlite_database(tree / "a" / f"burst-{index}.db") for index in range(40)}
    os.unlink(tree / "top.db")
    # The control: the kernel did drop events -- it queued 16 and then its overflow marker.
    # This raw read takes them all, marker included, as a missed wake-up would lose them;
    # the rescan is the only way back, and it finds everything.
    events = list(parse_events(os.read(watch.fileno(), 65536)))
    assert len(events) == small_event_queue + 1
    assert events[-1].mask & flags.Q_OVERFLOW
    changes = watch.rescan()
    assert {target.database for target in changes.added} == made
    assert changes.removed == (str(tree / "top.db"),)
    # Through read(): a fresh burst overflows again, and read() rescans by itself.
    more = {make_sqlite_database(tree / "a" / "b" / f"again-{index}.db") for index in range(40)}
    _, took = wait_for(watch, lambda seen: set(seen.added) >= more)
    assert took < PROMPT
    assert "inotify queue overflowed" in caplog.text


@pytest.mark.timeout(300)
def test_idle_cost_is_nothing_with_two_thousand_databases(tmp_path: Path, watch_of) -> None:
    root = tmp_path / "many"
    template = make_sqlite_database(tmp_path / "template.db")
    for folder in range(200):
        (root / f"f{folder:03}").mkdir(parents=True)
        for index in range(10):
            shutil.copyfile(template, root / f"f{folder:03}" / f"d{index}.db")
    watch = watch_of(entry_of(root))
    assert len(watch.start()) == 2000
    assert watch.watches == 201
    # Every copy was made before start: nothing is pending.
    ready, _, _ = select.select([watch.fileno()], [], [], 1.0)
    assert ready == [] and not watch.read()
    before = os.times()
    deadline = time.monotonic() + 3.0
    while (remaining := deadline - time.monotonic()) > 0:
        select.select([watch.fileno()], [], [], remaining)
        assert not watch.read()
    after = os.times()
    cpu = (after.user - before.user) + (after.system - before.system)
    assert cpu < 0.05
    # The control: one write is seen at once, so the quiet above was not a deaf watcher.
    sqlite3_command(str(root / "f100" / "d5.db"), "INSERT INTO t VALUES (2);")
    _, took = wait_for(watch, lambda seen: str(root / "f100" / "d5.db") in seen.changed)
    assert took < PROMPT
