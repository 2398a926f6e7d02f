"""Names are shown escaped: one record stays one line, a terminal never sees raw control bytes."""

from __future__ import annotations

import os

from ltxpool.display import escape
from ltxpool.errors import LtxpoolError


def test_ordinary_names_read_as_they_are() -> None:
    assert escape("/srv/ltx/app/ltx/0/0000000000000001-0000000000000001.ltx") == (
        "/srv/ltx/app/ltx/0/0000000000000001-0000000000000001.ltx"
    )
    assert escape("tenant-café.db") == "tenant-café.db"


def test_control_characters_and_backslashes_are_spelled_out() -> None:
    assert escape("a\nFAKE LOG LINE") == "a\\nFAKE LOG LINE"
    assert escape("x\x1b[2Jy") == "x\\x1b[2Jy"
    assert escape("back\\slash") == "back\\\\slash"
    assert escape("\u2028") == "\\u2028"


def test_bytes_that_are_not_utf8_are_shown_as_bytes() -> None:
    assert escape(os.fsdecode(b"bad\xffname")) == "bad\\xffname"


def test_errors_escape_the_path_they_carry() -> None:
    message = str(LtxpoolError("/r/ltx/0/evil\nltxpool: all good", "list", None, "name is not <min>-<max>.ltx"))
    assert "\n" not in message and "evil\\nltxpool" in message
