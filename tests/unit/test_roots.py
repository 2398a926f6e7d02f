"""Replica roots that could not be kept safe are refused at start, each with its reason.

Every refusal has its accepted twin (the control): the same kind of folder, made safe,
passes the same check.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ltxpool.replica.errors import UnsafeRootError
from ltxpool.replica.roots import check_root


def refused(path: str | Path, owners: list[int] | None = None) -> str:
    with pytest.raises(UnsafeRootError) as caught:
        check_root(path, [] if owners is None else owners)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)
    return caught.value.reason


@pytest.mark.parametrize("path", ["/", "/etc", "/etc/ltx", "/usr/local/ltx", "/proc/self", "/tmp", "/var", "/home"])
def test_system_folders_and_shared_tops_are_refused(path: str) -> None:
    assert "system folder" in refused(path) or "shared folder" in refused(path)


def test_a_folder_inside_a_shared_top_is_accepted(tmp_path: Path) -> None:
    check_root(tmp_path / "replica")


def test_a_dotdot_component_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    assert "'..'" in refused(f"{tmp_path}/a/../replica")
    check_root(f"{tmp_path}/replica")


def test_a_root_others_may_write_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "replica"
    root.mkdir()
    os.chmod(root, 0o777)
    assert "writable by group or others" in refused(root)
    os.chmod(root, 0o755)
    check_root(root)


def test_a_root_in_a_folder_anyone_may_write_is_refused_unless_sticky(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    assert "group or others may write" in refused(shared / "replica")
    os.chmod(shared, 0o1777)
    check_root(shared / "replica")


def test_a_root_owned_by_someone_unexpected_is_refused_unless_named(tmp_path: Path) -> None:
    root = tmp_path / "replica"
    root.mkdir()
    os.chown(root, 54321, 54321)
    assert "owned by uid 54321" in refused(root)
    check_root(root, [54321])
    check_root(root, None)


def test_a_file_is_not_a_root(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    assert "Not a directory" in refused(tmp_path / "file")


def test_a_root_in_a_group_writable_folder_is_refused_unless_sticky(tmp_path: Path) -> None:
    shared = tmp_path / "team"
    shared.mkdir()
    os.chmod(shared, 0o775)
    assert "group or others may write" in refused(shared / "replica")
    os.chmod(shared, 0o1775)
    check_root(shared / "replica")


def test_a_root_below_a_folder_someone_else_owns_is_refused(tmp_path: Path) -> None:
    """Its owner could swap the root (or a folder between) for a link to a root-only folder."""
    theirs = tmp_path / "tenant-home"
    theirs.mkdir()
    os.chown(theirs, 54321, 54321)
    assert "owned by uid 54321" in refused(theirs / "replicas" / "app", [54321])
    os.chown(theirs, 0, 0)
    check_root(theirs / "replicas" / "app")
