"""scan's rules (what is a database, what is never followed) and the inotify limit check."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from ltxpool.discovery import (
    DatabaseDir,
    DatabaseFile,
    DiscoveryError,
    check_watch_limit,
    needed_watches,
    replica_for,
    scan,
)
from ltxpool.discovery.scan import claim, is_sqlite_database, matches, scan_dir
from tests.support.helpers import make_sqlite_database


def dir_entry(root: Path, **options: object) -> DatabaseDir:
    return DatabaseDir(str(root), str(root.parent / "replicas"), **options)  # type: ignore[arg-type]


def test_only_files_with_the_header_are_databases_side_files_never(tmp_path: Path) -> None:
    real = make_sqlite_database(tmp_path / "real.db")
    (tmp_path / "empty.db").touch()
    (tmp_path / "text.db").write_text("hello")
    (tmp_path / "real.db-wal").write_bytes(b"SQLite format 3\x00")
    (tmp_path / "real.db-journal").write_bytes(b"SQLite format 3\x00")
    assert list(scan_dir(dir_entry(tmp_path, pattern="*"))) == [real]
    assert is_sqlite_database(str(tmp_path / "real.db-wal"))  # the control: the header alone would pass
    assert not matches(dir_entry(tmp_path, pattern="*"), "real.db-wal")


@pytest.mark.timeout(10)
def test_a_fifo_or_a_link_named_like_a_database_is_never_opened(tmp_path: Path) -> None:
    real = make_sqlite_database(tmp_path / "real.db")
    os.mkfifo(tmp_path / "pipe.db")
    (tmp_path / "link.db").symlink_to(real)
    assert not is_sqlite_database(str(tmp_path / "pipe.db"))  # would block on a plain open
    assert not is_sqlite_database(str(tmp_path / "link.db"))
    assert is_sqlite_database(real)
    assert list(scan([dir_entry(tmp_path)])) == [real]
    assert scan([DatabaseFile(str(tmp_path / "pipe.db"), "/r")]) == {}


def test_a_symlinked_folder_is_not_descended_a_real_one_is(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "real").mkdir(parents=True)
    outside.mkdir()
    make_sqlite_database(outside / "secret.db")
    inside = make_sqlite_database(root / "real" / "mine.db")
    (root / "linked").symlink_to(outside, target_is_directory=True)
    assert list(scan([dir_entry(root, recursive=True)])) == [inside]
    assert scan([dir_entry(root, recursive=False)]) == {}


def test_a_dir_entry_that_is_itself_a_link_matches_nothing(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    make_sqlite_database(real / "a.db")
    (tmp_path / "alias").symlink_to(real, target_is_directory=True)
    assert len(scan([dir_entry(real)])) == 1
    assert scan([dir_entry(tmp_path / "alias")]) == {}


def test_many_other_files_cost_no_header_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for index in range(2000):
        (tmp_path / f"log-{index}.txt").touch()
    real = make_sqlite_database(tmp_path / "only.db")
    opened: list[str] = []
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda path, *args, **kwargs: opened.append(path) or real_open(path, *args, **kwargs))
    assert list(scan([dir_entry(tmp_path)])) == [real]
    assert opened == [real]


def test_the_first_entry_that_names_a_database_wins_in_scan_and_claim(tmp_path: Path) -> None:
    path = make_sqlite_database(tmp_path / "a.db")
    entries = [dir_entry(tmp_path), DatabaseFile(path, "/elsewhere")]
    assert scan(entries)[path].replica == str(tmp_path.parent / "replicas" / "a.db")
    claimed = claim(entries, path)
    assert claimed is not None and claimed[1] == scan(entries)[path]
    assert claim(entries[::-1], path) == (entries[1], scan(entries[::-1])[path])
    assert claim(entries, str(tmp_path / "a.db-wal")) is None


def test_needed_watches_counts_each_existing_folder_once(tmp_path: Path) -> None:
    for name in ("a/b", "a/c", "d"):
        (tmp_path / name).mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "a", target_is_directory=True)
    entries = [dir_entry(tmp_path, recursive=True), DatabaseFile(str(tmp_path / "a" / "x.db"), "/r"),
               DatabaseFile(str(tmp_path / "missing" / "x.db"), "/r")]
    assert needed_watches(entries) == 5  # root, a, a/b, a/c, d


def fake_proc(tmp_path: Path, watches: int, instances: int = 128) -> str:
    limits = tmp_path / "proc" / "sys" / "fs" / "inotify"
    limits.mkdir(parents=True)
    (limits / "max_user_watches").write_text(f"{watches}\n")
    (limits / "max_user_instances").write_text(f"{instances}\n")
    return str(tmp_path / "proc")


def test_check_watch_limit_names_the_limit_to_raise(tmp_path: Path) -> None:
    tenants = tmp_path / "tenants"
    for index in range(12):
        (tenants / f"t{index}").mkdir(parents=True)
    entries = [dir_entry(tenants, recursive=True)]
    check_watch_limit(entries, proc=fake_proc(tmp_path / "roomy", 13))  # the control: 13 folders fit
    with pytest.raises(DiscoveryError) as raised:
        check_watch_limit(entries, proc=fake_proc(tmp_path / "small", 8))
    assert str(raised.value) == (f"{tenants}: watch: 13 folders to watch, but fs.inotify.max_user_watches is 8: "
                                 "raise it (sysctl fs.inotify.max_user_watches=1024) [ENOSPC]")
    copy = pickle.loads(pickle.dumps(raised.value))
    assert (type(copy), str(copy), copy.errno) == (DiscoveryError, str(raised.value), raised.value.errno)
    # Every worker watches every folder: three of them need three times as many.
    with pytest.raises(DiscoveryError, match="39 folders to watch"):
        check_watch_limit(entries, watchers=3, proc=fake_proc(tmp_path / "three", 30))


def test_check_watch_limit_wants_one_free_inotify_instance(tmp_path: Path) -> None:
    entries = [dir_entry(tmp_path)]
    check_watch_limit(entries, proc=fake_proc(tmp_path / "one", 100, instances=1))
    with pytest.raises(DiscoveryError, match=r"fs.inotify.max_user_instances is 0: raise it"):
        check_watch_limit(entries, proc=fake_proc(tmp_path / "none", 100, instances=0))


@pytest.mark.parametrize("database", [
    "/srv/t/a.db", "/srv/t/x/y/b.db", "/srv/t/..a.db", "/srv/t/a..b/c.db", "/srv/t/./a.db", "/srv/t//a.db",
    "/srv/t/x/../a.db", "/srv/t/x/../../etc/a.db", "/srv/t/../etc/a.db", "/srv/tx/a.db", "/srv/t", "/srv/t/",
    "/etc/a.db", "/srv/t/.", "/srv/t/x/..",
])
@pytest.mark.parametrize("folder", ["/srv/t", "/srv/t/", "/"])
def test_a_replica_maps_as_relpath_maps_it_and_a_path_outside_the_folder_has_none(folder: str, database: str) -> None:
    """The sliced fast path and ``os.path.relpath`` agree on every path, the tricky ones included."""
    entry = DatabaseDir(folder, "/var/ltx")
    expected = os.path.relpath(database, folder)
    if expected == os.pardir or expected.startswith(os.pardir + os.sep):
        with pytest.raises(ValueError, match="is not under"):
            replica_for(entry, database)
    else:
        assert replica_for(entry, database) == os.path.join("/var/ltx", expected)
