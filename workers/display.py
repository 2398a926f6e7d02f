"""Names as they may be shown: a file name is data a tenant chose, never terminal input.

A name may hold a newline (a forged log line), an escape sequence (it reaches the
operator's terminal raw) or bytes that are not UTF-8 (surrogate escapes). Every name
ltxpool prints or logs goes through :func:`escape` first, so one record stays one line
and shows exactly which bytes the name holds.
"""

from __future__ import annotations

import os

__all__ = ["escape", "one_line"]

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def _escape_char(char: str) -> str:
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (os.fsdecode's surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x20 or 0x7F <= code < 0xA0 or code in (0x2028, 0x2029):
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    return char


def escape(text: str | os.PathLike[str]) -> str:
    """``text`` with control characters, backslashes and undecodable bytes spelled out.

    Printable text (including non-ASCII letters) is unchanged, so ordinary names read
    as they are.
    """
    value = os.fspath(text)
    if value.isprintable() and "\\" not in value:
        return value
    return "".join(_escape_char(char) for char in value)


def one_line(text: str) -> str:
    """``text`` with control characters spelled out but backslashes kept as they are.

    For text that may mix names already escaped (an error's message) with names that
    are not: escaping it again would double every backslash, while leaving it alone
    could let a raw newline through. This keeps it one line and changes nothing an
    :func:`escape` already produced.
    """
    if text.isprintable():
        return text
    return "".join(char if char == "\\" else _escape_char(char) for char in text)
