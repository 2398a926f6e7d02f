"""Test helpers: real child processes (fork start method, set explicitly) and the CLI."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

FORK = multiprocessing.get_context("fork")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_ltxpool(*args: str, timeout: float = 120, cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the command line in a real child process, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *args],
        capture_output=True, text=True, timeout=timeout, cwd=cwd,
        env={**os.environ, "PYTHONPATH": ROOT},
    )


class Child:
    """A forked child running ``target(*args, ready, release)``; ``ready``/``release`` are events."""

    def __init__(self, target: Callable[..., Any], *args: Any) -> None:
        self.ready = FORK.Event()
        self.release = FORK.Event()
        self.process = FORK.Process(target=target, args=(*args, self.ready, self.release), daemon=True)
        self.process.start()

    def wait_ready(self, timeout: float = 10.0) -> None:
        assert self.ready.wait(timeout), "child did not get ready in time"

    def finish(self, timeout: float = 10.0) -> int | None:
        self.release.set()
        self.process.join(timeout)
        return self.process.exitcode

    def kill(self) -> None:
        self.process.kill()
        self.process.join(10)
