"""Injected faults at every system call of compaction, the janitor and restore.

Each fault (EIO, ENOSPC, EDQUOT, EACCES, EROFS, EMFILE) must give a typed error that
names the file and the step on one line, leave nothing half-done and lose nothing;
once the fault is gone, the same work succeeds.
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import pytest

from ltxpool.errors import LtxpoolError
from ltxpool.ltx import verify_file
from ltxpool.replica.atomic import temp_name_for
from ltxpool.replica.compactor import compact_level
from ltxpool.replica.janitor import JanitorSettings, janitor_pass
from ltxpool.replica.layout import Replica
from ltxpool.replica.restore import restore
from ltxpool.replica.retention import RetentionPolicy
from tests.support.helpers import fd_target, inject, is_dir_fd, is_temp_fd
from tests.support.synthetic import SyntheticStream

ERRNOS = [errno.EIO, errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS, errno.EMFILE]


def is_level_dir(path: object) -> bool:
    """A level directory, named by path or (``os.scandir(fd)``) by an open descriptor."""
    name = fd_target(path) if isinstance(path, int) else os.fspath(path)  # type: ignore[arg-type]
    return os.path.basename(os.path.dirname(name)) == "ltx"


def is_ltx(path: object) -> bool:
    return str(path).endswith(".ltx")


def is_temp(path: object) -> bool:
    return str(path).endswith(".tmp")


#: step -> (os function, which calls fail, whether the real call runs first)
WRITE_FAULTS = {
    "create": ("open", is_temp, False),
    "write": ("write", is_temp_fd, False),
    "fsync": ("fsync", is_temp_fd, False),
    "close": ("close", is_temp_fd, True),
    "rename": ("rename", is_temp, False),
    "fsync-dir": ("fsync", is_dir_fd, False),
}
COMPACTION_FAULTS = {
    **WRITE_FAULTS,
    "open": ("open", is_ltx, False),
    "list level directory": ("scandir", is_level_dir, False),
}
RESTORE_FAULTS = {**WRITE_FAULTS, "open": ("open", is_ltx, False)}


def snapshot_of(replica: Replica) -> dict[str, bytes]:
    return {
        os.path.relpath(os.path.join(dirpath, name), replica.root): Path(dirpath, name).read_bytes()
        for dirpath, _, names in os.walk(replica.root)
        for name in names
        if not name.startswith(".ltxpool.")
    }


def assert_one_line_naming(error: LtxpoolError, step: str, code: int) -> None:
    assert (error.step, error.errno) == (step, code)
    assert error.path and "\n" not in str(error)
    assert error.path in str(error) and step in str(error)


@pytest.mark.parametrize("code", ERRNOS, ids=errno.errorcode.get)
@pytest.mark.parametrize("step", list(COMPACTION_FAULTS))
def test_compaction_fault_is_named_loses_nothing_and_the_retry_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str, code: int
) -> None:
    stream = SyntheticStream(Replica(tmp_path / "replica"), seed=code)
    stream.run(5)
    stream.replica.ensure_level_dir(1)
    before = snapshot_of(stream.replica)
    function, applies, after_real_call = COMPACTION_FAULTS[step]
    inject(monkeypatch, function, code, applies, after_real_call=after_real_call)
    with pytest.raises(LtxpoolError) as caught:
        compact_level(stream.replica, 1)
    monkeypatch.undo()
    assert_one_line_naming(caught.value, step, code)
    assert snapshot_of(stream.replica) == before
    assert compact_level(stream.replica, 1) is not None
    output = tmp_path / "restored.db"
    restore(stream.replica, output, check_integrity=False)
    assert output.read_bytes() == stream.images[stream.txid]


@pytest.mark.parametrize("code", ERRNOS, ids=errno.errorcode.get)
@pytest.mark.parametrize("step", list(RESTORE_FAULTS))
def test_restore_fault_is_named_and_leaves_no_output_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str, code: int
) -> None:
    stream = SyntheticStream(Replica(tmp_path / "replica"), seed=code)
    stream.run(4)
    output = tmp_path / "out" / "restored.db"
    output.parent.mkdir()
    function, applies, after_real_call = RESTORE_FAULTS[step]
    inject(monkeypatch, function, code, applies, after_real_call=after_real_call)
    with pytest.raises(LtxpoolError) as caught:
        restore(stream.replica, output, check_integrity=False)
    monkeypatch.undo()
    assert_one_line_naming(caught.value, step, code)
    assert os.listdir(output.parent) == []
    restore(stream.replica, output, check_integrity=False)
    assert output.read_bytes() == stream.images[stream.txid]


def janitor_replica(tmp_path: Path) -> tuple[SyntheticStream, Path]:
    """Level 0 covered by level 1 (retention work), an orphan temp file and a corrupt file."""
    stream = SyntheticStream(Replica(tmp_path / "replica"), seed=5)
    stream.run(4)
    compact_level(stream.replica, 1)
    stream.run(2)
    orphan = Path(stream.replica.level_dir(0)) / temp_name_for("0000000000000009-0000000000000009.ltx")
    orphan.write_bytes(b"half")
    corrupt = Path(stream.replica.list_level(0).files[-1].path)
    corrupt.write_bytes(corrupt.read_bytes()[:-3])
    return stream, corrupt


JANITOR_FAULTS = {
    "unlink temp file": ("unlink", is_temp, False),
    "retention unlink": ("unlink", is_ltx, False),
    "quarantine": ("rename", is_ltx, False),
    "list level directory": ("scandir", is_level_dir, False),
    "open lock file": ("open", lambda path: str(path).startswith(".ltxpool."), False),
}


@pytest.mark.parametrize("code", ERRNOS, ids=errno.errorcode.get)
@pytest.mark.parametrize("step", list(JANITOR_FAULTS))
def test_janitor_fault_is_named_and_deletes_nothing_it_should_keep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str, code: int
) -> None:
    stream, corrupt = janitor_replica(tmp_path)
    settings = JanitorSettings(retention=RetentionPolicy(level_retention={0: 0, 1: 0, 2: 0, 3: 0}))
    function, applies, after_real_call = JANITOR_FAULTS[step]
    inject(monkeypatch, function, code, applies, after_real_call=after_real_call)
    with pytest.raises(LtxpoolError) as caught:
        janitor_pass(stream.replica, settings, time.time() + 10)
    monkeypatch.undo()
    assert_one_line_naming(caught.value, step, code)
    for listing in stream.replica.list_all().values():
        for f in listing.files:
            if f.path != str(corrupt):
                verify_file(f.path)
    assert corrupt.exists() or (Path(stream.replica.quarantine_dir) / f"0-{corrupt.name}").exists()
    report = janitor_pass(stream.replica, settings, time.time() + 10)
    assert report.problems == [] or all("quarantined" in p for p in report.problems)
    output = tmp_path / "restored.db"
    restore(stream.replica, output, stream.txid - 1, check_integrity=False)
    assert output.read_bytes() == stream.images[stream.txid - 1]
