"""Which directories may be a replica root: checked once, at start, before anything is written.

Everything below a root is handled through descriptors (``ltxpool.replica.directory``);
the root and the folders above it are reached by the operator's path, so they are the
part that must be right from the start. Refused, each with the path and the reason:

* a path with a ``..`` component (what it names depends on links above it);
* ``/`` and system folders (``/etc``, ``/usr``, ``/proc``...) and anything inside the
  ones that hold the system, and the bare shared tops (``/tmp``, ``/home``, ``/var``):
  ``replicate app.db /etc`` once wrote into ``/etc``;
* a root writable by group or others: anyone could plant or swap files in it;
* a folder above it writable by group or others without the sticky bit, or owned by
  anyone but root and the pool's user: they could swap the root itself for a link
  (``/tmp`` is sticky: only an entry's owner may rename it). The root is opened by
  path each round, so the folders above it must be the operator's;
* a root owned by someone unexpected: the pool's user, root, and whoever the caller
  names (the source database's owner for ``replicate``, ``tenant_owners`` for the
  pool).

This is PostgreSQL's rule for its data directory (owned by the server's user, no
group/other write) and logrotate's (it refuses a folder writable by others unless
told whose it is with ``su``), applied to a tree that may legitimately be a tenant's.
"""

from __future__ import annotations

import os
import pwd
import stat
from collections.abc import Iterable

from ltxpool.replica.errors import UnsafeRootError

__all__ = ["check_root", "SYSTEM_TREES", "SHARED_TOPS"]

#: Trees that belong to the system: no replica root at them or anywhere inside.
SYSTEM_TREES = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/sbin",
                "/sys", "/usr")
#: Shared tops: a replica may live below them, not be them.
SHARED_TOPS = ("/", "/home", "/media", "/mnt", "/opt", "/root", "/run", "/srv", "/tmp", "/var", "/var/lib",
               "/var/tmp")


def _user(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _inside(path: str, tree: str) -> bool:
    return path == tree or path.startswith(tree + "/")


def check_root(path: str | os.PathLike[str], owners: Iterable[int] | None = ()) -> None:
    """Raise :class:`UnsafeRootError` unless ``path`` is a safe replica root.

    ``owners``: uids besides root and this process's that may own the root; None
    accepts any owner (an operator's one-off command naming the folder). A root
    that does not exist yet is judged by the folders above it (it will be created
    with the right owner and mode).
    """
    given = os.fspath(path)
    if ".." in given.split(os.sep):
        raise UnsafeRootError(given, "check replica root", None, "has a '..' component; name the folder directly")
    real = os.path.realpath(given)
    for tree in SYSTEM_TREES:
        if _inside(real, tree):
            raise UnsafeRootError(given, "check replica root", None, f"is inside the system folder {tree}")
    if real in SHARED_TOPS:
        raise UnsafeRootError(given, "check replica root", None, f"is the shared folder {real}; use a folder inside it")
    allowed = None if owners is None else {0, os.geteuid(), *owners}
    try:
        st = os.stat(real)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise UnsafeRootError.from_oserror(given, "check replica root", exc) from exc
    if st is not None:
        if not stat.S_ISDIR(st.st_mode):
            raise UnsafeRootError(given, "check replica root", None, "Not a directory")
        if st.st_mode & 0o022:
            raise UnsafeRootError(given, "check replica root", None,
                                  f"is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})")
        if allowed is not None and st.st_uid not in allowed:
            raise UnsafeRootError(given, "check replica root", None,
                                  f"is owned by {_user(st.st_uid)}, not by the pool's user, root or the "
                                  "database's owner (name the owner in tenant_owners if this is intended)")
    parent = os.path.dirname(real)
    while True:
        try:
            above = os.stat(parent)
        except FileNotFoundError:
            above = None
        if above is not None and above.st_mode & 0o022 and not above.st_mode & stat.S_ISVTX:
            raise UnsafeRootError(given, "check replica root", None,
                                  f"lies in {parent}, which group or others may write to (mode "
                                  f"{stat.S_IMODE(above.st_mode):04o}, not sticky): the root could be swapped")
        if above is not None and above.st_uid not in (0, os.geteuid()):
            raise UnsafeRootError(given, "check replica root", None,
                                  f"lies in {parent}, owned by {_user(above.st_uid)}: its owner could swap the "
                                  "root for a link (only the root itself may be a tenant's)")
        if parent == "/":
            return
        parent = os.path.dirname(parent)
