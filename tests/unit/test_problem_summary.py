"""Junk names a tenant renames between rounds cost the pool log a bounded number of bytes per round.

The rounds are real janitor rounds over real files, logged the way the janitor child
logs them (``ltxpool.pool.roles``) through the pool's text formatter. The control is
the same ``SkipLog`` with its protections switched off by its parameters (every name
quoted, no interval): its bytes per round grow with the number of names.
"""

from __future__ import annotations

import io
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ltxpool.pool.logging import TextFormatter
from ltxpool.pool.roles import _log_report
from ltxpool.replica.janitor import JanitorSettings, janitor_pass
from ltxpool.replica.layout import Replica
from ltxpool.replica.problem_summary import SkipLog, SkippedNames, group_skipped
from tests.support.synthetic import SyntheticStream

ROUNDS = 4


@pytest.fixture
def pool_log() -> Iterator[io.StringIO]:
    """What the janitor child's logger writes, formatted as the pool formats it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TextFormatter())
    logger = logging.getLogger("ltxpool.pool")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    yield stream
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def _bytes_per_round(root: Path, junk: int, skips: SkipLog, log: io.StringIO) -> list[int]:
    """Log bytes of each of ``ROUNDS`` janitor rounds, every junk name renamed before each round."""
    stream = SyntheticStream(Replica(root))
    stream.run(2)
    level = Path(stream.replica.level_dir(0))
    for i in range(junk):
        (level / f"junk-0-{i:05d}.ltx").write_bytes(b"junk")
    sizes = []
    known: set[str] = set()
    for round_ in range(ROUNDS):
        if round_:
            for i in range(junk):
                os.rename(level / f"junk-{round_ - 1}-{i:05d}.ltx", level / f"junk-{round_}-{i:05d}.ltx")
        before = len(log.getvalue().encode())
        _log_report(janitor_pass(stream.replica, JanitorSettings(), time.time()), known, skips)
        sizes.append(len(log.getvalue().encode()) - before)
    return sizes


def test_renamed_junk_costs_bounded_bytes_per_round_where_unsummarised_costs_bytes_per_name(
    tmp_path: Path, pool_log: io.StringIO,
) -> None:
    summarised = {junk: _bytes_per_round(tmp_path / f"s{junk}", junk, SkipLog(), pool_log) for junk in (1000, 2000)}
    unsummarised = {junk: _bytes_per_round(tmp_path / f"u{junk}", junk, SkipLog(interval=0.0, shown=10**9), pool_log)
                    for junk in (1000, 2000)}
    print(f"log bytes per round: summarised {summarised}, unsummarised {unsummarised}")
    for sizes in summarised.values():
        assert all(0 < size < 400 for size in sizes)  # one line, every round: the names are new each round
    assert summarised[1000] == summarised[2000]
    for junk, sizes in unsummarised.items():
        assert all(size > 15 * junk for size in sizes)  # "junk-0-00000.ltx, ": 18 bytes a name
    assert unsummarised[2000][0] == pytest.approx(2 * unsummarised[1000][0], rel=0.1)


def test_the_same_names_repeat_at_most_once_per_interval_and_a_new_name_at_once() -> None:
    now = [0.0]
    skips, control = SkipLog(interval=60.0, clock=lambda: now[0]), SkipLog(interval=0.0, clock=lambda: now[0])

    def round_at(at: float, *names: str) -> tuple[int, int]:
        now[0] = at
        groups = [SkippedNames("/r/ltx/0", "name is not <min>-<max>.ltx", frozenset(names))] if names else []
        return len(skips.due(groups)), len(control.due(groups))

    assert round_at(0, "a", "b") == (1, 1)
    assert round_at(10, "a", "b") == (0, 1)
    assert round_at(20, "a") == (0, 1)        # fewer names: nothing new to say
    assert round_at(30, "a", "c") == (1, 1)   # a new name: logged the round it appears
    assert round_at(80, "a", "c") == (0, 1)
    assert round_at(90, "a", "c") == (1, 1)   # 60 s after the last line: once more
    assert round_at(91) == (0, 0)             # the directory is clean: forgotten
    assert round_at(92, "a", "c") == (1, 1)   # so its junk is new again


def test_a_summary_line_quotes_the_first_names_escaped_and_counts_the_rest() -> None:
    skipped = [(f"/r/ltx/0/{name}", "name is not <min>-<max>.ltx")
               for name in ("z.ltx", "evil\n2026-01-01T00:00:00.000Z ERROR forged\x1b[2J", "b.ltx", "c.ltx")]
    skipped.append(("/r/ltx/1/d", "not a regular file (symlinks are not followed)"))
    first, second = group_skipped(skipped)
    assert first.line() == ("4 names skipped in /r/ltx/0 (name is not <min>-<max>.ltx; first: b.ltx, c.ltx, "
                            "evil\\n2026-01-01T00:00:00.000Z ERROR forged\\x1b[2J)")
    assert second.line() == "1 name skipped in /r/ltx/1 (not a regular file (symlinks are not followed); first: d)"
    unsummarised = [f"{path}: {reason}" for path, reason in skipped]  # control: the line per name it replaces
    assert any(line.startswith("2026-01-01T00:00:00.000Z ERROR forged") for line in "\n".join(unsummarised).splitlines())
