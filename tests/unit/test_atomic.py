"""The atomic writer: a final name holds a complete file or nothing new; failures name their step."""

from __future__ import annotations

import errno
import hashlib
import os
import pickle
import stat
from pathlib import Path

import pytest

from ltxpool.replica.atomic import (
    AtomicWriter,
    is_ltxpool_temp,
    temp_name_for,
    write_atomic,
)
from ltxpool.replica.errors import AtomicWriteError
from tests.support.helpers import inject, is_dir_fd, is_temp_fd

STEP_FAULTS = {
    "create": ("open", errno.EACCES, lambda path: str(path).endswith(".tmp"), False),
    "write": ("write", errno.ENOSPC, is_temp_fd, False),
    "fsync": ("fsync", errno.EIO, is_temp_fd, False),
    "close": ("close", errno.EDQUOT, is_temp_fd, True),
    "stat": ("stat", errno.EACCES, lambda path: str(path).endswith(".tmp"), False),
    "rename": ("rename", errno.EROFS, lambda path: str(path).endswith(".tmp"), False),
    "fsync-dir": ("fsync", errno.EIO, is_dir_fd, False),
}


def test_a_write_produces_the_complete_file_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "0000000000000001-0000000000000001.ltx"
    assert write_atomic(target, b"x" * 5000) == 5000
    assert target.read_bytes() == b"x" * 5000
    assert os.listdir(tmp_path) == [target.name]


def test_created_files_take_the_mode_asked_less_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        write_atomic(tmp_path / "a.ltx", b"a", mode=0o644)
        write_atomic(tmp_path / "b.ltx", b"b", mode=0o600)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "a.ltx").st_mode) == 0o640
    assert stat.S_IMODE(os.stat(tmp_path / "b.ltx").st_mode) == 0o600


def test_files_are_private_unless_a_mode_is_asked(tmp_path: Path) -> None:
    write_atomic(tmp_path / "a.ltx", b"a")
    assert stat.S_IMODE(os.stat(tmp_path / "a.ltx").st_mode) == 0o600


def test_nobody_else_can_read_a_file_before_it_is_complete(tmp_path: Path) -> None:
    with AtomicWriter(tmp_path / "a.ltx", mode=0o644) as writer:
        writer.write(b"half")
        assert stat.S_IMODE(os.stat(writer.temp_path).st_mode) == 0o600
        writer.commit()
    assert stat.S_IMODE(os.stat(tmp_path / "a.ltx").st_mode) == 0o644


def test_a_write_in_large_chunks_and_in_small_chunks_gives_the_same_bytes(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    with AtomicWriter(tmp_path / "stream.ltx") as writer:
        for start in range(0, len(data), 1 << 20):
            writer.write(data[start : start + (1 << 20)])
        writer.commit()
    write_atomic(tmp_path / "chunks.ltx", (data[i : i + 4096] for i in range(0, len(data), 4096)))
    assert (tmp_path / "stream.ltx").read_bytes() == data
    assert (tmp_path / "chunks.ltx").read_bytes() == data


def test_a_large_file_arrives_whole(tmp_path: Path) -> None:
    data = os.urandom(10 * 1024 * 1024)
    target = tmp_path / "large.ltx"
    with AtomicWriter(target) as writer:
        writer.write(data)
        writer.commit()
    assert target.stat().st_size == len(data)
    assert hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(data).digest()


def test_temp_names_say_ltxpool_and_pid_and_are_unique() -> None:
    names = {temp_name_for("0000000000000001-0000000000000003.ltx") for _ in range(1000)}
    assert len(names) == 1000
    for name in names:
        assert is_ltxpool_temp(name)
        assert f".ltxpool-{os.getpid()}-" in name
    assert not is_ltxpool_temp("0000000000000001-0000000000000003.ltx.tmp")


@pytest.mark.parametrize("step", list(STEP_FAULTS))
def test_a_failure_at_each_step_names_it_and_leaves_no_temp_and_no_final_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    function, code, applies, after_real_call = STEP_FAULTS[step]
    target = tmp_path / "0000000000000001-0000000000000003.ltx"
    inject(monkeypatch, function, code, applies, after_real_call=after_real_call)
    with pytest.raises(AtomicWriteError) as caught:
        write_atomic(target, b"page" * 1024)
    monkeypatch.undo()
    error = caught.value
    assert (error.step, error.errno) == (step, code)
    if step == "fsync-dir":
        assert error.path == str(tmp_path)
    else:
        assert os.path.dirname(error.path) == str(tmp_path)
        assert os.path.basename(error.path).startswith(target.name + ".ltxpool-")
    assert os.listdir(tmp_path) == []
    assert pickle.loads(pickle.dumps(error)).step == step


@pytest.mark.parametrize("step", ["write", "fsync", "rename"])
def test_a_failed_write_leaves_an_existing_final_file_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    target = tmp_path / "a.ltx"
    target.write_bytes(b"old content")
    function, code, applies, after_real_call = STEP_FAULTS[step]
    inject(monkeypatch, function, code, applies, after_real_call=after_real_call)
    with pytest.raises(AtomicWriteError):
        write_atomic(target, b"new content")
    monkeypatch.undo()
    assert target.read_bytes() == b"old content"
    assert os.listdir(tmp_path) == ["a.ltx"]


def test_a_temp_file_removed_before_rename_is_reported_as_the_670_race(tmp_path: Path) -> None:
    target = tmp_path / "0000000000000001-0000000000000003.ltx"
    with pytest.raises(AtomicWriteError) as caught:
        with AtomicWriter(target) as writer:
            writer.write(b"data")
            os.unlink(writer.temp_path)
            writer.commit()
    assert caught.value.step == "stat"
    assert caught.value.errno == errno.ENOENT
    assert "#670" in str(caught.value)
    assert not target.exists()


def test_a_temp_file_replaced_before_rename_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "a.ltx"
    with pytest.raises(AtomicWriteError) as caught:
        with AtomicWriter(target) as writer:
            writer.write(b"data")
            os.unlink(writer.temp_path)
            Path(writer.temp_path).write_bytes(b"impostor")
            writer.commit()
    assert caught.value.step == "stat"
    assert "replaced" in str(caught.value)
    assert os.listdir(tmp_path) == []


def test_leaving_the_block_without_commit_rolls_back(tmp_path: Path) -> None:
    with AtomicWriter(tmp_path / "a.ltx") as writer:
        writer.write(b"half")
    assert os.listdir(tmp_path) == []


def test_a_symlinked_parent_is_refused_not_followed(tmp_path: Path) -> None:
    """Restore's output (or any write by path) never lands where a planted link points."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "out").symlink_to(elsewhere)
    with pytest.raises(AtomicWriteError) as caught:
        write_atomic(tmp_path / "out" / "restored.db", b"data")
    assert caught.value.step == "open directory" and "symlink" in str(caught.value)
    assert os.listdir(elsewhere) == []
    # Control: the same write through the real folder works.
    write_atomic(elsewhere / "restored.db", b"data")
    assert os.listdir(elsewhere) == ["restored.db"]
