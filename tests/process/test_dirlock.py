"""The per-directory lock: writers share, the janitor excludes, nobody waits forever."""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path

import pytest

from ltxpool.locks.dirlock import GATE_NAME, SLOT_PREFIX, DirLock
from ltxpool.locks.errors import LockFileError, LockTimeout


def hold_writing(directory: str, ready, release) -> None:
    with DirLock(directory) as lock, lock.writing():
        ready.set()
        release.wait(30)


def hold_cleaning(directory: str, ready, release) -> None:
    with DirLock(directory) as lock, lock.cleaning(timeout=5):
        ready.set()
        release.wait(30)


def keep_writing(directory: str, hold: float, ready, release) -> None:
    with DirLock(directory) as lock:
        ready.set()
        while not release.is_set():
            with lock.writing():
                time.sleep(hold)


def test_writers_in_different_processes_hold_the_directory_at_once(tmp_path: Path, child) -> None:
    holder = child(hold_writing, str(tmp_path))
    holder.wait_ready()
    with DirLock(tmp_path) as lock, lock.writing(timeout=1.0):
        assert lock.last_wait < 1.0
    assert holder.finish() == 0


def test_cleaning_waits_for_a_writer_then_times_out(tmp_path: Path, child) -> None:
    holder = child(hold_writing, str(tmp_path))
    holder.wait_ready()
    with DirLock(tmp_path) as lock:
        with pytest.raises(LockTimeout) as caught:
            with lock.cleaning(timeout=0.1):
                pytest.fail("cleaning must not start while a write is in flight")
        assert caught.value.path == str(tmp_path)
        assert caught.value.waited >= 0.1
        holder.finish()
        with lock.cleaning(timeout=1.0) as waited:
            assert waited < 1.0


def test_a_writer_waits_while_the_janitor_cleans(tmp_path: Path, child) -> None:
    janitor = child(hold_cleaning, str(tmp_path))
    janitor.wait_ready()
    with DirLock(tmp_path) as lock:
        with pytest.raises(LockTimeout):
            with lock.writing(timeout=0.1):
                pytest.fail("a write must not start while the janitor sweeps")
        janitor.finish()
        with lock.writing(timeout=1.0):
            pass


def test_janitor_is_not_starved_by_a_stream_of_writers(tmp_path: Path, child) -> None:
    writers = [child(keep_writing, str(tmp_path), 0.002) for _ in range(4)]
    for writer in writers:
        writer.wait_ready()
    waits = []
    with DirLock(tmp_path) as lock:
        for _ in range(30):
            with lock.cleaning(timeout=2.0) as waited:
                waits.append(waited)
            time.sleep(0.005)
    for writer in writers:
        assert writer.finish() == 0
    assert len(waits) == 30
    assert max(waits) < 2.0


def test_a_killed_writer_never_leaves_the_directory_locked(tmp_path: Path, child) -> None:
    holder = child(hold_writing, str(tmp_path))
    holder.wait_ready()
    holder.kill()
    with DirLock(tmp_path) as lock, lock.cleaning(timeout=1.0) as waited:
        assert waited < 1.0


def test_a_writer_beyond_the_slot_count_waits_for_a_free_slot(tmp_path: Path) -> None:
    first, second, third = (DirLock(tmp_path, slots=2) for _ in range(3))
    with first.writing(timeout=1), second.writing(timeout=1):
        with pytest.raises(LockTimeout):
            with third.writing(timeout=0.05):
                pass
    with third.writing(timeout=1):
        pass
    for lock in (first, second, third):
        lock.close()


def test_lock_files_are_dotfiles_that_stay_and_are_not_world_writable(tmp_path: Path) -> None:
    with DirLock(tmp_path) as lock:
        with lock.cleaning(timeout=1):
            pass
    names = sorted(os.listdir(tmp_path))
    assert names == sorted([GATE_NAME] + [f"{SLOT_PREFIX}{i:02d}" for i in range(16)])
    for name in names:
        assert not os.stat(tmp_path / name).st_mode & stat.S_IWOTH


def test_a_lock_object_made_before_fork_is_refused_in_the_child(tmp_path: Path) -> None:
    lock = DirLock(tmp_path)
    pid = os.fork()
    if pid == 0:
        try:
            with lock.writing(timeout=1):
                os._exit(1)
        except LockFileError:
            os._exit(0)
        os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    lock.close()


def test_a_lock_object_is_refused_in_another_thread(tmp_path: Path) -> None:
    lock = DirLock(tmp_path)
    errors: list[BaseException] = []

    def use() -> None:
        try:
            with lock.writing(timeout=1):
                pass
        except LockFileError as exc:
            errors.append(exc)

    thread = threading.Thread(target=use)
    thread.start()
    thread.join()
    lock.close()
    assert len(errors) == 1 and "after fork" in str(errors[0])


def test_a_symlink_planted_as_the_lock_file_is_refused_and_not_followed(tmp_path: Path) -> None:
    directory = tmp_path / "level"
    directory.mkdir()
    outside = tmp_path / "outside"
    outside.write_bytes(b"precious")
    (directory / GATE_NAME).symlink_to(outside)
    with DirLock(directory) as lock:
        with pytest.raises(LockFileError) as caught:
            with lock.writing(timeout=1):
                pass
    assert caught.value.path == str(directory / GATE_NAME)
    assert "open lock file" in str(caught.value)
    assert outside.read_bytes() == b"precious"


def test_a_symlinked_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(LockFileError) as caught:
        DirLock(tmp_path / "link")
    assert caught.value.step == "open directory"


def test_a_deleted_lock_file_is_recreated_on_the_next_acquire(tmp_path: Path) -> None:
    with DirLock(tmp_path, slots=1) as lock:
        with lock.writing(timeout=1):
            pass
        (tmp_path / GATE_NAME).unlink()
        (tmp_path / f"{SLOT_PREFIX}00").unlink()
        with lock.writing(timeout=1):
            assert (tmp_path / GATE_NAME).exists()
            with DirLock(tmp_path, slots=1) as other:
                with pytest.raises(LockTimeout):
                    with other.cleaning(timeout=0.05):
                        pass


def test_janitor_gets_in_when_writers_never_pause_both_opportunistically_and_by_holding_the_gate(
    tmp_path: Path, child
) -> None:
    writers = [child(keep_writing, str(tmp_path), 0.005) for _ in range(6)]
    for writer in writers:
        writer.wait_ready()
    time.sleep(0.05)
    with DirLock(tmp_path) as lock:
        waits = []
        for patience in (0.005, 0.0) * 10:
            with lock.cleaning(timeout=1.0, patience=patience) as waited:
                waits.append(waited)
    for writer in writers:
        assert writer.finish() == 0
    assert len(waits) == 20 and max(waits) < 1.0
