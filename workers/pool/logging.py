"""One log stream for the whole pool, every line tagged with the role and pid that wrote it.

``multiprocessing_logging.install_mp_handler()`` replaces each handler of the root
logger with a wrapper that owns a ``multiprocessing.Queue`` and a thread that feeds
the queue's records to the real handler. A child forked *after* the install
inherits the wrapper and its queue, so its records travel over the queue to the one
thread in the supervisor and come out in one stream, whole lines, never interleaved.
A child forked *before* the install would keep writing to the inherited stream
directly. Hence the order in ``setup_logging``: handler, filter, formatter, then the
install, all before the first fork; and the start method must be ``fork``, since the
queue reaches the child by inheritance (the library checks the *global* start method).

At exit the order matters again: multiprocessing's exit handler runs before
logging's and closes the library queue (its feeder thread closes the reader too, on
Python 3.11), so records still queued would be lost. ``drain_logging`` closes the
wrapper first, which waits until the queue is empty, and puts the plain handler back.

One record is one line, whatever a message quotes: a tenant's file name may hold a
newline (a forged record) or a terminal escape. Callers escape the names they log
(``ltxpool.display.escape``); the formatters guarantee it for everything else by
spelling out control characters in the message, and by prefixing every line of a
traceback with ``TRACEBACK_PREFIX`` (its lines escaped too), so no line of it can
pass for a record.

The role is added by a filter on the handler (the wrapper shares its sub-handler's
filter list), so it runs in the process that logs, where the role is known; the
formatter runs in the supervisor's feeder thread. The pid is the record's own
``process`` field.

The library's queue has one weakness on a pool whose children get SIGKILLed (by the
supervisor for a hang, by the OOM killer, by an operator): its writers share one
process-shared semaphore, and a child killed while holding it (its feeder thread
between the pipe write and the release, a window the GIL can stretch to
milliseconds) leaves it taken for good; every later record of every process, the
supervisor's own included, then waits behind it and the log goes silent. So
``setup_logging`` gives the queue a ``DeathReleasedLock``: an ``flock`` on an
anonymous file, which the kernel drops when its holder dies. Records under
``PIPE_BUF`` are written by one ``write``, so a death can only come before or after
one, never inside it. Events and heartbeats still travel over one pipe per child
(see ``ltxpool.pool.child``), never over this queue.
"""

from __future__ import annotations

import fcntl
import json
import logging
import multiprocessing
import os
import sys
import tempfile
import time
from typing import TextIO

import multiprocessing_logging

from ltxpool.display import one_line

__all__ = [
    "RoleFilter",
    "TextFormatter",
    "JsonFormatter",
    "set_role",
    "setup_logging",
    "set_format",
    "drain_logging",
    "TRACEBACK_PREFIX",
    "DeathReleasedLock",
]

#: Starts every line of a traceback in the text format: a record starts with its time.
TRACEBACK_PREFIX = "  | "

_role = "supervisor"


def set_role(role: str) -> None:
    """Name this process in every record it logs from now on (``worker-2``, ``janitor``)."""
    global _role
    _role = role


class RoleFilter(logging.Filter):
    """Adds ``record.role``, in the process that emits the record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "role"):
            record.role = _role
        return True


def _exception_text(formatter: logging.Formatter, record: logging.LogRecord) -> str | None:
    """The traceback, formatted once and cached on the record, as ``logging.Formatter`` does.

    The library formats a child's record in the child, drops ``exc_info`` (a
    traceback does not pickle) and ships ``exc_text``: caching it is what carries
    the traceback across.
    """
    if record.exc_info and not record.exc_text:
        record.exc_text = formatter.formatException(record.exc_info)
    return record.exc_text


def _traceback_lines(text: str) -> list[str]:
    return [one_line(line) for line in text.split("\n")]


def _utc(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z"


class TextFormatter(logging.Formatter):
    """``2025-01-31T12:00:00.123Z INFO worker-2[4711] message`` (and the traceback, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        line = (f"{_utc(record.created)} {record.levelname} {getattr(record, 'role', '?')}[{record.process}] "
                f"{one_line(record.getMessage())}")
        text = _exception_text(self, record)
        if not text:
            return line
        return "\n".join([line, *(TRACEBACK_PREFIX + traced for traced in _traceback_lines(text))])


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, role, pid, logger, message (and exception)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": _utc(record.created),
            "ts": round(record.created, 6),
            "level": record.levelname,
            "role": getattr(record, "role", "?"),
            "pid": record.process,
            "logger": record.name,
            # json.dumps keeps it one line; one_line also spells out what it leaves raw
            # for a terminal (DEL, C1 controls, U+2028).
            "message": one_line(record.getMessage()),
        }
        text = _exception_text(self, record)
        if text:
            entry["exception"] = "\n".join(_traceback_lines(text))
        return json.dumps(entry, ensure_ascii=False)


def _formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else TextFormatter()


class DeathReleasedLock:
    """The log queue's write lock: taken by one process at a time, released by the kernel if it dies.

    ``flock`` belongs to an open file description, and a forked child shares its
    parent's, so each process opens its own (through ``/proc/self/fd``) the first time
    it takes the lock. Only the queue's one feeder thread per process takes it.
    """

    def __init__(self) -> None:
        self._shared, path = tempfile.mkstemp(prefix="ltxpool-log-lock-")
        os.unlink(path)
        self._pid = os.getpid()
        self._fd = self._shared

    def _own_descriptor(self) -> int:
        if self._pid != os.getpid():
            self._fd = os.open(f"/proc/self/fd/{self._shared}", os.O_RDONLY | os.O_CLOEXEC)
            self._pid = os.getpid()
        return self._fd

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        """Wait for the lock (the queue's feeder always blocks); ``True`` once held."""
        fcntl.flock(self._own_descriptor(), fcntl.LOCK_EX if block else fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True

    def release(self) -> None:
        fcntl.flock(self._own_descriptor(), fcntl.LOCK_UN)

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _make_writes_death_safe(root: logging.Logger) -> None:
    """Swap each library queue's semaphore for a ``DeathReleasedLock`` before its first record.

    The feeder thread binds the lock when it starts, on the first record a process
    puts, and a forked child starts its own; so the swap holds for every process
    forked after it.
    """
    for handler in root.handlers:
        if isinstance(handler, multiprocessing_logging.MultiProcessingHandler):
            handler.queue._wlock = DeathReleasedLock()


def setup_logging(log_format: str, level: str, stream: TextIO | None = None) -> None:
    """Route every process's records to ``stream`` (stderr) through the supervisor; call before forking."""
    if multiprocessing.get_start_method(allow_none=True) != "fork":
        multiprocessing.set_start_method("fork", force=True)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(_formatter(log_format))
    handler.addFilter(RoleFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    multiprocessing_logging.install_mp_handler(root)
    _make_writes_death_safe(root)


def set_format(log_format: str, level: str) -> None:
    """Switch format and level of the running stream (on reload); children forked later follow."""
    root = logging.getLogger()
    root.setLevel(level.upper())
    for handler in root.handlers:
        handler.setFormatter(_formatter(log_format))


def drain_logging() -> None:
    """Deliver every record still queued, then log directly again (the supervisor calls it last)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, multiprocessing_logging.MultiProcessingHandler):
            handler.close()
    multiprocessing_logging.uninstall_mp_handler(root)
