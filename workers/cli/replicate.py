"""``ltxpool replicate DB REPLICA [--interval S] [--once]``: SQLite -> level-0 LTX files.

``--once``: one step, then exit (prints ``no change since txid N`` when there was
nothing to write). Otherwise a step every S seconds until SIGTERM or SIGINT: the
step in progress is finished, then the process exits 0. A step still running
``STOP_GRACE`` seconds after the signal (waiting out a lock or a busy database) is
abandoned as a crash would abandon it, which is safe at any point: a stop is never
held up by someone else's lock. One progress line per file
written: ``txid N: M pages changed, B bytes`` (`` (snapshot)`` appended for a
snapshot). A database that stays locked past the busy timeout, or is missing or
unreadable for a while, is retried at the next step (one line on stderr, repeated
every minute while it lasts; ``ltxpool status`` shows it); every other error is one
line on stderr and exit 1. Between steps it is a good neighbour to the app
(``ltxpool.replicate.loop``).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from types import FrameType

from ltxpool.display import escape, one_line
from ltxpool.replicate.errors import StepAbandoned
from ltxpool.replicate.loop import LoopEvent, replicate_continuously
from ltxpool.replicate.replicator import Replicator, StepResult

__all__ = ["NAME", "HELP", "add_arguments", "run", "progress_line"]

NAME = "replicate"
HELP = "Replicate a SQLite database into level-0 LTX files of a replica directory, one file per change."
DEFAULT_INTERVAL = 1.0
#: After SIGTERM/SIGINT the step in progress may finish for this long; a longer one is abandoned.
#: (``LTXPOOL_STOP_GRACE`` overrides it, for the test that shows what the deadline prevents.)
STOP_GRACE = float(os.environ.get("LTXPOOL_STOP_GRACE", "10"))


def _interval(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("database", metavar="DB", help="the SQLite database (WAL or rollback-journal mode)")
    parser.add_argument("replica", metavar="REPLICA", help="the replica directory (created if missing)")
    parser.add_argument(
        "--interval", type=_interval, default=DEFAULT_INTERVAL, metavar="S",
        help=f"seconds between steps (default {DEFAULT_INTERVAL:g})",
    )
    parser.add_argument("--once", action="store_true", help="one step, then exit")


def progress_line(result: StepResult) -> str:
    line = f"txid {result.txid}: {result.pages} pages changed, {result.bytes} bytes"
    return line + " (snapshot)" if result.snapshot else line


def _print_event(event: LoopEvent) -> None:
    if event.kind == "written":
        assert event.result is not None
        print(progress_line(event.result), flush=True)
    elif event.kind in ("busy", "problem"):
        print(f"ltxpool: {one_line(event.message)}", file=sys.stderr, flush=True)
    elif event.kind == "recovered":
        print(one_line(event.message), flush=True)


def run(args: argparse.Namespace) -> int:
    if args.once:
        with Replicator(args.database, args.replica) as replicator:
            result = replicator.step()
            print(progress_line(result) if result else f"no change since txid {replicator.state.txid}", flush=True)
        return 0
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        if not stop.is_set():
            stop.set()
            signal.setitimer(signal.ITIMER_REAL, STOP_GRACE)

    def give_up(signum: int, frame: FrameType | None) -> None:
        raise StepAbandoned(f"the step in progress did not finish within {STOP_GRACE:g} s of the stop; "
                            f"it is abandoned (a crash-safe point: the next start picks up from the replica)")

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    previous[signal.SIGALRM] = signal.signal(signal.SIGALRM, give_up)
    try:
        with Replicator(args.database, args.replica, pin=True) as replicator:
            print(f"replicating {escape(replicator.database)} to {escape(args.replica)}: {one_line(replicator.recovery)}",
                  flush=True)
            replicate_continuously(replicator, args.interval, stop, _print_event)
    except StepAbandoned as exc:
        print(f"ltxpool: stopping: {exc}", file=sys.stderr, flush=True)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
