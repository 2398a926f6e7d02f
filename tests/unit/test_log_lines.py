"""One record is one line: a name quoted in a message, or in a traceback, cannot forge a record.

Control: the standard library's formatter, given the same records, lets the forged
line and the raw escape sequence through.
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

from ltxpool.pool.logging import TRACEBACK_PREFIX, JsonFormatter, RoleFilter, TextFormatter

FORGED = "2026-01-01T00:00:00.000Z ERROR supervisor[1] replica deleted"
NAME = f"/r/ltx/0/evil\n{FORGED}\x1b[2J\x9b31m.ltx"
RECORD = re.compile(r"^\S+Z [A-Z]+ \S+\[\d+\] ")


def _records(formatter: logging.Formatter) -> Iterator[str]:
    """The text two records come out as: a warning naming NAME, and an error whose exception quotes it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(RoleFilter())
    logger = logging.getLogger("ltxpool.test.lines")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("%s: name is not <min>-<max>.ltx", NAME)
        try:
            raise FileNotFoundError(2, "No such file or directory", NAME)
        except FileNotFoundError:
            logger.exception("janitor round failed")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    yield from stream.getvalue().splitlines()


def test_text_records_stay_one_line_each_and_the_traceback_is_prefixed_where_a_plain_formatter_forges() -> None:
    lines = list(_records(TextFormatter()))
    assert [line for line in lines if RECORD.match(line)] == [lines[0], lines[1]]
    assert all(line.startswith(TRACEBACK_PREFIX) for line in lines[2:])
    assert lines[2] == f"{TRACEBACK_PREFIX}Traceback (most recent call last):"
    assert not [line for line in lines if line.startswith(FORGED) or "\x1b" in line or "\x9b" in line]
    assert lines[0].endswith("evil\\n" + FORGED + "\\x1b[2J\\x9b31m.ltx: name is not <min>-<max>.ltx")

    control = list(_records(logging.Formatter("%(asctime)s %(levelname)s %(message)s")))
    assert [line for line in control if line.startswith(FORGED)]
    assert [line for line in control if "\x1b" in line]


def test_json_records_spell_out_what_json_leaves_raw_for_a_terminal() -> None:
    lines = list(_records(JsonFormatter()))
    assert len(lines) == 2
    entries = [json.loads(line) for line in lines]
    assert "\x9b" not in entries[0]["message"] and "\\x9b31m" in entries[0]["message"]
    assert all("\x1b" not in line and "\x9b" not in line for line in lines)
    assert entries[1]["exception"].startswith("Traceback (most recent call last):")
    # Control: json.dumps alone keeps the C1 escape (CSI) raw in the line.
    assert "\x9b" in json.dumps({"message": NAME}, ensure_ascii=False)
