"""Refuse replica roots on network filesystems: flock is not trustworthy there.

Every guarantee of ltxpool rests on flock (the directory lock keeps the janitor off
a temp file between fsync and rename, Litestream #670; the claim keeps two workers
off one level). On NFS, CIFS/SMB, CephFS, GlusterFS, sshfs and friends, flock is
emulated, local to one client, or silently a no-op, depending on the server and the
mount options. So the supervisor finds the mount of every replica root in the
kernel's mount table and refuses to start when it is a network filesystem, naming
the mount point and its type, unless the operator passes ``--allow-network-fs``.

The mount of a path is the entry whose mount point is the longest prefix of the
path's realpath; of several entries on one mount point, the last one (mounted on
top) wins. ``/proc/self/mountinfo`` is read (it escapes spaces as ``\\040`` and
puts the type after a ``-`` separator); ``/proc/mounts`` format is understood too.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ltxpool.pool.errors import MountTableError, NetworkFilesystemError

__all__ = [
    "MOUNTINFO",
    "NETWORK_FS_TYPES",
    "NETWORK_FUSE_SUBTYPES",
    "Mount",
    "NetworkFilesystemError",
    "is_network_fs",
    "parse_mount_table",
    "read_mount_table",
    "mount_of",
    "refuse_network_fs",
]

MOUNTINFO = "/proc/self/mountinfo"

#: Kernel filesystem types that live on another host.
NETWORK_FS_TYPES = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "ceph", "glusterfs", "9p", "lustre",
    "afs", "openafs", "gpfs", "beegfs", "ocfs2", "gfs2", "orangefs", "pvfs2", "coda",
    "davfs", "vboxsf", "vmhgfs", "virtiofs", "moosefs", "mfs", "quobyte", "wekafs",
})
#: FUSE daemons (``fuse.<subtype>``) that talk to another host.
NETWORK_FUSE_SUBTYPES = frozenset({
    "sshfs", "glusterfs", "ceph", "ceph-fuse", "s3fs", "gcsfuse", "rclone", "davfs",
    "moosefs", "mfs", "lizardfs", "juicefs", "seaweedfs", "goofys", "beegfs", "cvmfs",
    "vmhgfs-fuse", "smbnetfs", "curlftpfs",
})


@dataclass(frozen=True)
class Mount:
    mount_point: str
    fs_type: str
    source: str


def is_network_fs(fs_type: str) -> bool:
    """True for a filesystem type whose data lives on another host."""
    if fs_type in NETWORK_FS_TYPES:
        return True
    kind, _, subtype = fs_type.partition(".")
    return kind in ("fuse", "fuseblk") and subtype in NETWORK_FUSE_SUBTYPES


def _unescape(field: str) -> str:
    r"""The kernel writes space, tab, newline and backslash in paths as \040, \011, \012, \134."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and all(c in "01234567" for c in field[i + 1:i + 4]):
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def _parse_line(line: str) -> Mount | None:
    fields = line.split()
    if "-" in fields[6:]:
        # mountinfo: id parent major:minor root MOUNT-POINT options [optional...] - TYPE SOURCE super-options
        separator = fields.index("-", 6)
        if len(fields) < separator + 3:
            return None
        return Mount(_unescape(fields[4]), fields[separator + 1], _unescape(fields[separator + 2]))
    if len(fields) >= 3:
        # /proc/mounts: SOURCE MOUNT-POINT TYPE options dump pass
        return Mount(_unescape(fields[1]), fields[2], _unescape(fields[0]))
    return None


def parse_mount_table(text: str) -> list[Mount]:
    """The mounts of a ``/proc/self/mountinfo`` or ``/proc/mounts`` text, in mount order."""
    return [mount for line in text.splitlines() if line.strip() and (mount := _parse_line(line))]


def read_mount_table(path: str = MOUNTINFO) -> list[Mount]:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as table:
            return parse_mount_table(table.read())
    except OSError as exc:
        raise MountTableError.from_oserror(path, "read mount table", exc) from exc


def _contains(mount_point: str, path: str) -> bool:
    return mount_point == "/" or path == mount_point or path.startswith(mount_point.rstrip("/") + "/")


def mount_of(path: str, mounts: Sequence[Mount]) -> Mount | None:
    """The mount holding ``path``: longest mount point that is a prefix, the topmost of equals."""
    real = os.path.realpath(path)
    best: Mount | None = None
    for mount in mounts:
        if _contains(mount.mount_point, real) and (
            best is None or len(mount.mount_point) >= len(best.mount_point)
        ):
            best = mount
    return best


def refuse_network_fs(roots: Iterable[str], mounts: Sequence[Mount]) -> None:
    """Raise :class:`NetworkFilesystemError` for the first root on a network filesystem."""
    for root in roots:
        mount = mount_of(root, mounts)
        if mount is not None and is_network_fs(mount.fs_type):
            raise NetworkFilesystemError(
                root,
                "check filesystem",
                None,
                f"is on {mount.mount_point} ({mount.fs_type} from {mount.source}), a network filesystem "
                "where flock is not reliable; pass --allow-network-fs to run anyway",
            )
