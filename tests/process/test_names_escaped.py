"""File names with a newline and a terminal escape reach no output raw: janitor, status, verify, the pool log.

A tenant (a real user, in a real process) names files in the level directory it owns
so that, printed raw, they forge a log record and clear the operator's screen. Every command below must show the names
escaped (``\\n``, ``\\x1b``), every output line must be a line we wrote, and the control
shows the same names, printed as the old code printed them, do forge a record.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from ltxpool.display import escape
from ltxpool.pool.logging import TRACEBACK_PREFIX
from ltxpool.replica.layout import Replica
from tests.support.helpers import run_ltxpool
from tests.support.synthetic import SyntheticStream
from tests.support.users import User, python_as

FORGED = "2026-01-01T00:00:00.000Z ERROR supervisor[1] replica deleted"
JUNK = f"junk\n{FORGED}\x1b[2J"                 # not an LTX name: skipped
BAD = f"bad\n{FORGED}\x1b[2J.ltx"               # an .ltx name, garbage inside: verify says BAD
GOOD = f"good\n{FORGED}\x1b[31m.ltx"            # an .ltx name, a valid file inside: verify -v says ok
RECORD = re.compile(r"^\S+Z [A-Z]+ \S+\[\d+\] ")


PLANT = """
import shutil, sys
level, junk, bad, good, valid = sys.argv[1:]
open(f"{level}/{junk}", "wb").write(b"junk")
open(f"{level}/{bad}", "wb").write(b"LTX1 not really")
shutil.copyfile(f"{level}/{valid}", f"{level}/{good}")
"""


def _replica(shared_tmp: str, tenant: User) -> Replica:
    stream = SyntheticStream(Replica(Path(shared_tmp, "replica")))
    stream.run(2)
    level = Path(stream.replica.level_dir(0))
    for directory, _, names in os.walk(stream.replica.root):  # the tenant owns its replica
        for path in (directory, *(os.path.join(directory, name) for name in names)):
            os.chown(path, tenant.uid, tenant.gid)
    planted = python_as(tenant, PLANT, str(level), JUNK, BAD, GOOD, "0000000000000002-0000000000000002.ltx")
    assert planted.returncode == 0, planted.stderr
    return stream.replica


def _assert_clean(text: str) -> None:
    """No raw control character but newlines, and no line that starts as a forged record."""
    assert not [line for line in text.splitlines() if line.startswith(FORGED)], text
    assert "\x1b" not in text, text


def test_janitor_status_and_verify_print_the_names_escaped(shared_tmp: str, tenant: User) -> None:
    replica = _replica(shared_tmp, tenant)
    level = replica.level_dir(0)
    outputs = {}
    for command in (("janitor",), ("status",), ("verify", "-v")):
        done = run_ltxpool(*command, replica.root, timeout=60)
        outputs[command[0]] = done.stdout + done.stderr
        _assert_clean(outputs[command[0]])
    assert f"names skipped in {level} (name is not <min>-<max>.ltx; first: {escape(BAD)}, {escape(GOOD)}, " \
           f"{escape(JUNK)})" in outputs["janitor"]
    for name in (JUNK, BAD, GOOD):
        assert f"{escape(f'{level}/{name}')}: name is not <min>-<max>.ltx" in outputs["status"]
    assert f"BAD {escape(f'{level}/{BAD}')}: " in outputs["verify"]
    assert f"ok  {escape(f'{level}/{GOOD}')}" in outputs["verify"]

    # Control: the line per name the janitor and status printed before, unescaped, forges a record.
    old = "\n".join(f"  {level}/{name}: name is not <min>-<max>.ltx" for name in (JUNK, BAD, GOOD))
    assert [line for line in old.splitlines() if line.startswith(FORGED)]


def test_the_pool_log_shows_the_names_escaped_and_every_line_is_a_record_or_a_traceback(
    shared_tmp: str, tenant: User,
) -> None:
    replica = _replica(shared_tmp, tenant)
    config = Path(shared_tmp, "ltxpool.toml")
    config.write_text(f'tenant_owners = ["{tenant.name}"]\n')
    pool = subprocess.Popen(
        [sys.executable, "-m", "ltxpool.cli", "supervise", "--config", str(config), "--workers", "1",
         "--janitor-interval", "0.2", "--poll-interval", "0.2", replica.root],
        stderr=subprocess.PIPE, text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(pool.stderr or ()), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 30
        while not any("names skipped in" in line for line in lines):
            assert time.monotonic() < deadline and pool.poll() is None, "".join(lines)
            time.sleep(0.05)
        pool.send_signal(signal.SIGTERM)
        assert pool.wait(30) == 0
    finally:
        pool.kill()
        pool.wait()
    reader.join(10)
    text = "".join(lines)
    _assert_clean(text)
    assert all(RECORD.match(line) or line.startswith(TRACEBACK_PREFIX) for line in text.splitlines()), text
    assert f"first: {escape(BAD)}, {escape(GOOD)}, {escape(JUNK)})" in text
