"""Network filesystems: found in the mount table, refused with mount point and type."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ltxpool.pool.errors import NetworkFilesystemError
from ltxpool.pool.netfs import (
    Mount,
    is_network_fs,
    mount_of,
    parse_mount_table,
    read_mount_table,
    refuse_network_fs,
)
from tests.support.helpers import run_ltxpool

MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard
80 27 0:52 / /srv/replicas rw,relatime shared:40 - nfs4 fileserver:/export/replicas rw,vers=4.2
81 80 0:53 / /srv/replicas/local rw,relatime - ext4 /dev/vdb rw
82 27 0:54 / /mnt/my\\040share rw master:3 - cifs //nas/share rw,vers=3.0
83 27 0:55 / /home/ops/remote rw,nosuid,nodev - fuse.sshfs ops@host:/data rw,user_id=0
84 27 0:56 / /srv/replicas/local rw,relatime - nfs fileserver:/other rw
"""

PROC_MOUNTS = """\
/dev/vda / ext4 rw,relatime 0 0
server:/exp /data nfs rw,vers=3 0 0
"""


def test_mountinfo_lines_give_mount_point_type_and_source_with_escapes_and_optional_fields() -> None:
    mounts = parse_mount_table(MOUNTINFO)
    assert mounts[1] == Mount("/", "ext4", "/dev/vda")
    assert mounts[2] == Mount("/srv/replicas", "nfs4", "fileserver:/export/replicas")
    assert mounts[4] == Mount("/mnt/my share", "cifs", "//nas/share")
    assert mounts[5] == Mount("/home/ops/remote", "fuse.sshfs", "ops@host:/data")


def test_proc_mounts_format_is_understood_too() -> None:
    assert parse_mount_table(PROC_MOUNTS) == [Mount("/", "ext4", "/dev/vda"), Mount("/data", "nfs", "server:/exp")]


def test_the_mount_of_a_path_is_the_longest_prefix_and_the_topmost_of_equal_ones() -> None:
    mounts = parse_mount_table(MOUNTINFO)
    assert mount_of("/srv/replicas/app", mounts) == mounts[2]
    assert mount_of("/srv/replicas-old/app", mounts) == mounts[1]
    assert mount_of("/srv/replicas/local/app", mounts) == mounts[6]
    assert mount_of("/srv/replicas/local/app", mounts[:6]) == mounts[3]
    assert mount_of("/", mounts) == mounts[1]


def test_the_mount_is_found_through_symlinks(tmp_path: Path) -> None:
    (tmp_path / "link").symlink_to("/srv/replicas")
    assert mount_of(str(tmp_path / "link" / "app"), parse_mount_table(MOUNTINFO)).fs_type == "nfs4"


@pytest.mark.parametrize("fs_type", ["nfs", "nfs4", "cifs", "smb3", "smbfs", "ceph", "glusterfs", "fuse.sshfs",
                                     "9p", "lustre", "afs", "gpfs", "beegfs", "fuse.s3fs", "fuse.rclone"])
def test_network_filesystem_types_are_recognised(fs_type: str) -> None:
    assert is_network_fs(fs_type)


@pytest.mark.parametrize("fs_type", ["ext4", "xfs", "btrfs", "zfs", "tmpfs", "overlay", "fuse.gocryptfs"])
def test_local_filesystem_types_are_not(fs_type: str) -> None:
    assert not is_network_fs(fs_type)


def test_refusal_names_the_root_the_mount_point_and_the_type() -> None:
    mounts = parse_mount_table(MOUNTINFO)
    refuse_network_fs(["/var/lib/ltx"], mounts)
    with pytest.raises(NetworkFilesystemError) as caught:
        refuse_network_fs(["/var/lib/ltx", "/home/ops/remote/app"], mounts)
    assert str(caught.value) == (
        "/home/ops/remote/app: check filesystem: is on /home/ops/remote (fuse.sshfs from ops@host:/data), "
        "a network filesystem where flock is not reliable; pass --allow-network-fs to run anyway"
    )


def test_this_hosts_own_mount_table_puts_the_test_directory_on_a_mount(tmp_path: Path) -> None:
    mount = mount_of(str(tmp_path), read_mount_table())
    assert mount is not None and os.path.realpath(tmp_path).startswith(mount.mount_point)


def fake_mount_table(tmp_path: Path, replica: Path, fs_type: str) -> Path:
    table = tmp_path / "mountinfo"
    table.write_text(f"27 1 254:0 / / rw - ext4 /dev/vda rw\n"
                     f"90 27 0:60 / {replica.parent} rw - {fs_type} fileserver:/export rw\n")
    return table


def test_supervise_refuses_a_replica_on_nfs_naming_mount_point_and_type(tmp_path: Path) -> None:
    replica = tmp_path / "shared" / "replica"
    replica.mkdir(parents=True)
    table = fake_mount_table(tmp_path, replica, "nfs4")
    done = run_ltxpool("supervise", "--mount-table", str(table), str(replica), timeout=30)
    assert done.returncode == 1
    assert done.stderr == (
        f"ltxpool: error: {replica}: check filesystem: is on {replica.parent} (nfs4 from fileserver:/export), "
        "a network filesystem where flock is not reliable; pass --allow-network-fs to run anyway\n"
    )


def test_supervise_with_allow_network_fs_starts_on_that_replica(tmp_path: Path) -> None:
    replica = tmp_path / "shared" / "replica"
    replica.mkdir(parents=True)
    table = fake_mount_table(tmp_path, replica, "nfs4")
    process = subprocess.Popen(
        [sys.executable, "-m", "ltxpool.cli", "supervise", "--allow-network-fs", "--mount-table", str(table),
         str(replica)],
        stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stderr is not None
        for line in process.stderr:
            if "janitor started" in line:
                break
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
