"""One log stream: a forked child's records, traceback included, come out of the parent tagged."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import logging, multiprocessing, sys
    from ltxpool.pool.child import ChildProcess
    from ltxpool.pool.logging import drain_logging, setup_logging

    def raises(link):
        logging.getLogger("ltxpool.test").info("about to fail")
        raise ValueError("boom")

    setup_logging(sys.argv[1], "info")
    logging.getLogger("ltxpool.test").info("before fork")
    child = ChildProcess(multiprocessing.get_context("fork"), "worker-3", raises, (), 1.0)
    child.start()
    child.process.join(10)
    logging.getLogger("ltxpool.test").info("child %d exited %s", child.pid, child.exitcode)
    drain_logging()
""")


def run_script(log_format: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", SCRIPT, log_format], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stderr.splitlines()


def test_json_lines_carry_role_and_pid_of_the_process_that_logged_and_the_childs_traceback() -> None:
    records = [json.loads(line) for line in run_script("json")]
    parent, child = records[0]["pid"], records[1]["pid"]
    assert [(r["role"], r["pid"], r["message"]) for r in records] == [
        ("supervisor", parent, "before fork"),
        ("worker-3", child, "about to fail"),
        ("worker-3", child, "crashed: ValueError: boom"),
        ("supervisor", parent, f"child {child} exited 1"),
    ]
    assert records[2]["level"] == "CRITICAL"
    assert records[2]["exception"].startswith("Traceback (most recent call last):")
    assert records[2]["exception"].endswith("ValueError: boom")


def test_text_lines_carry_role_and_pid_and_the_traceback_follows_its_line() -> None:
    lines = run_script("text")
    parent = re.fullmatch(r"\S+Z INFO supervisor\[(\d+)\] before fork", lines[0])
    last = re.fullmatch(r"\S+Z INFO supervisor\[(\d+)\] child (\d+) exited 1", lines[-1])
    assert parent is not None and last is not None and last.group(1) == parent.group(1)
    child = int(last.group(2))
    assert lines[1].split(" ", 1)[1] == f"INFO worker-3[{child}] about to fail"
    assert lines[2].split(" ", 1)[1] == f"CRITICAL worker-3[{child}] crashed: ValueError: boom"
    assert lines[3] == "  | Traceback (most recent call last):"
    assert lines[-2] == "  | ValueError: boom"


#: A child takes the log queue's write lock and is SIGKILLed holding it; then the parent logs.
KILLED_HOLDER = textwrap.dedent("""
    import logging, multiprocessing, os, signal, sys, time
    import multiprocessing_logging
    from ltxpool.pool.logging import setup_logging

    setup_logging("text", "info")
    queue = next(h.queue for h in logging.getLogger().handlers
                 if isinstance(h, multiprocessing_logging.MultiProcessingHandler))
    if sys.argv[1] == "library-semaphore":
        queue._wlock = multiprocessing.Lock()

    def die_holding_the_lock():
        queue._wlock.acquire()
        os.kill(os.getpid(), signal.SIGKILL)

    child = multiprocessing.get_context("fork").Process(target=die_holding_the_lock)
    child.start()
    child.join(10)
    logging.getLogger("ltxpool.test").info("after the child died: exit %s", child.exitcode)
    time.sleep(2)
    sys.stderr.flush()
    os._exit(0)
""")


def test_a_child_sigkilled_holding_the_log_write_lock_does_not_silence_the_pool() -> None:
    """The kernel drops the flock of the dead holder; control: the library's semaphore stays taken."""
    lines = {}
    for lock in ("death-released", "library-semaphore"):
        done = subprocess.run([sys.executable, "-c", KILLED_HOLDER, lock], capture_output=True, text=True,
                              timeout=30)
        lines[lock] = done.stderr.splitlines()
    assert any(line.endswith("after the child died: exit -9") for line in lines["death-released"]), lines
    assert not any("after the child died" in line for line in lines["library-semaphore"]), lines
