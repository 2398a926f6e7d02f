"""What the running pools cost the host: memory, open files and inotify watches, from ``/proc``.

A pool of 10,000 databases is bounded by three kernel limits before anything else:
its processes' descriptors (``RLIMIT_NOFILE``), the user's inotify watches
(``/proc/sys/fs/inotify/max_user_watches``, shared by every process of the user)
and memory. ``status`` reports, for every ``ltxpool supervise`` on the host (or the
one running a given config file) and each of its children:

* RSS: ``VmRSS`` of ``/proc/<pid>/status``;
* open files: the entries of ``/proc/<pid>/fd``, against the soft ``Max open files``
  of ``/proc/<pid>/limits``;
* inotify watches: the ``inotify wd:`` lines of ``/proc/<pid>/fdinfo/<fd>`` for each
  descriptor whose link reads ``anon_inode:inotify``.

Only the owner (or root) may list another process's descriptors. What cannot be read
is reported as unreadable, with why; it never stops the status. A child is a process
forked by the supervisor: it keeps the supervisor's command line.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

from ltxpool.pool.child import COMM_PREFIX

__all__ = ["PROC", "PoolResources", "ProcessResources", "find_pools", "max_user_watches", "measure", "resources_document"]

PROC = "/proc"
_INOTIFY = "anon_inode:inotify"
_CMDLINE_LIMIT = 65536


@dataclass
class ProcessResources:
    """One process of a pool; a None figure could not be read (``unreadable`` says why)."""

    pid: int
    role: str  # "supervisor", the child's role ("worker-0", "janitor"), or "child" if unnamed
    rss_bytes: int | None = None
    open_files: int | None = None
    open_files_limit: int | None = None  # None: unlimited or unknown
    inotify_watches: int | None = None
    unreadable: list[str] = field(default_factory=list)


@dataclass
class PoolResources:
    """One running ``ltxpool supervise``: its config file (as given), supervisor first, then children."""

    config: str | None
    processes: list[ProcessResources]

    def total(self, name: str) -> int | None:
        """The sum of one figure over the pool's processes; None if any could not be read."""
        values = [getattr(process, name) for process in self.processes]
        return None if any(value is None for value in values) else sum(values)


def _read(path: str, limit: int = _CMDLINE_LIMIT) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(limit)


def _is_supervise(args: list[bytes]) -> bool:
    """``ltxpool supervise ...``, ``python .../ltxpool supervise`` or ``python -m ltxpool.cli supervise``."""
    for index, arg in enumerate(args[:3]):
        name = os.path.basename(arg)
        is_program = name == b"ltxpool" or (index > 0 and args[index - 1] == b"-m" and arg.split(b".")[0] == b"ltxpool")
        if is_program:
            return b"supervise" in args[index + 1:]
    return False


def _config_of(args: list[bytes], pid: int, proc: str) -> str | None:
    """The ``--config`` the process was started with, made absolute against its working folder."""
    value: bytes | None = None
    for index, arg in enumerate(args):
        if arg == b"--config" and index + 1 < len(args):
            value = args[index + 1]
        elif arg.startswith(b"--config="):
            value = arg.partition(b"=")[2]
    if value is None:
        return None
    path = os.fsdecode(value)
    if not os.path.isabs(path):
        try:
            path = os.path.join(os.readlink(f"{proc}/{pid}/cwd"), path)
        except OSError:
            return path
    return path


def _same_file(given: str, wanted: str) -> bool:
    try:
        return os.path.samefile(given, wanted)
    except OSError:
        return os.path.realpath(given) == os.path.realpath(wanted)


def _status_fields(pid: int, proc: str) -> dict[str, str]:
    fields = {}
    for line in _read(f"{proc}/{pid}/status").decode("utf-8", "replace").splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def _nofile_limit(pid: int, proc: str) -> int | None:
    for line in _read(f"{proc}/{pid}/limits").decode("utf-8", "replace").splitlines():
        if line.startswith("Max open files"):
            soft = line[len("Max open files"):].split()[0]
            return int(soft) if soft.isdigit() else None
    return None


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def measure(pid: int, role: str, proc: str = PROC) -> ProcessResources:
    """The figures of one process, each read on its own: one that fails leaves the others."""
    found = ProcessResources(pid, role)
    try:
        rss = _status_fields(pid, proc).get("VmRSS", "")
        found.rss_bytes = int(rss.split()[0]) * 1024 if rss else 0
    except (OSError, ValueError) as exc:
        found.unreadable.append(f"rss: {_reason(exc) if isinstance(exc, OSError) else 'not a number'}")
    try:
        found.open_files_limit = _nofile_limit(pid, proc)
    except (OSError, ValueError) as exc:
        found.unreadable.append(f"limits: {_reason(exc) if isinstance(exc, OSError) else 'not a number'}")
    try:
        descriptors = os.listdir(f"{proc}/{pid}/fd")
    except OSError as exc:
        found.unreadable.append(f"open files: {_reason(exc)}")
        return found
    found.open_files = len(descriptors)
    watches = 0
    try:
        for fd in descriptors:
            try:
                if os.readlink(f"{proc}/{pid}/fd/{fd}") != _INOTIFY:
                    continue
                info = _read(f"{proc}/{pid}/fdinfo/{fd}", 1 << 24)
            except FileNotFoundError:
                continue  # closed since it was listed
            watches += sum(line.startswith(b"inotify wd:") for line in info.splitlines())
        found.inotify_watches = watches
    except OSError as exc:
        found.unreadable.append(f"inotify watches: {_reason(exc)}")
    return found


def _processes(proc: str) -> dict[int, list[bytes]]:
    """pid -> command line of every ``ltxpool supervise`` process (supervisors and their children)."""
    found = {}
    for name in os.listdir(proc):
        if not name.isdigit():
            continue
        try:
            args = _read(f"{proc}/{name}/cmdline").split(b"\0")
        except OSError:
            continue  # gone, or hidden from us (hidepid)
        if _is_supervise(args):
            found[int(name)] = args
    return found


def _parent(pid: int, proc: str) -> int | None:
    try:
        return int(_status_fields(pid, proc).get("PPid", ""))
    except (OSError, ValueError):
        return None


def _role_of(pid: int, proc: str) -> str:
    """A pool child's role from its command name (``ltx:worker-0``), or "child"."""
    try:
        with open(f"{proc}/{pid}/comm") as comm:
            name = comm.read().strip()
    except OSError:
        return "child"
    return name[len(COMM_PREFIX):] if name.startswith(COMM_PREFIX) else "child"


def find_pools(config: str | None = None, proc: str = PROC) -> list[PoolResources]:
    """Every running pool (only those started with ``config``, if given), with its processes measured."""
    processes = _processes(proc)
    parents = {pid: _parent(pid, proc) for pid in processes}
    pools = []
    for pid in sorted(processes):
        if parents[pid] in processes:
            continue  # a child: listed under its supervisor
        given = _config_of(processes[pid], pid, proc)
        if config is not None and (given is None or not _same_file(given, config)):
            continue
        children = sorted(child for child, parent in parents.items() if parent == pid)
        pools.append(PoolResources(given, [measure(pid, "supervisor", proc),
                                           *(measure(child, _role_of(child, proc), proc) for child in children)]))
    return pools


def max_user_watches(proc: str = PROC) -> int | None:
    """The inotify watches one user may hold (all of the user's processes together)."""
    try:
        return int(_read(f"{proc}/sys/fs/inotify/max_user_watches").strip())
    except (OSError, ValueError):
        return None


def resources_document(pools: list[PoolResources], proc: str = PROC) -> dict[str, Any]:
    """The ``--json`` form: per pool its totals and every process's figures."""
    return {
        "max_user_watches": max_user_watches(proc),
        "pools": [{
            "config": pool.config,
            "rss_bytes": pool.total("rss_bytes"),
            "open_files": pool.total("open_files"),
            "inotify_watches": pool.total("inotify_watches"),
            "processes": [asdict(process) for process in pool.processes],
        } for pool in pools],
    }
