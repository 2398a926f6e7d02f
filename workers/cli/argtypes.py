"""Argument types shared by the commands: each refuses a bad value with one line
(argparse prefixes it with the option's name) instead of a traceback later on."""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["positive_int", "port", "seconds", "positive_seconds", "seconds_between", "file_mode"]


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def file_mode(text: str) -> int:
    """An octal file mode such as 0640: permission bits only, never writable by others."""
    try:
        value = int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an octal mode such as 0640, got {text!r}") from None
    if not 0 <= value <= 0o777 or value & 0o002:
        raise argparse.ArgumentTypeError(f"must be permission bits (at most 0777) not writable by others, got {text}")
    return value


def port(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port from 1 to 65535, got {value}")
    return value


def seconds(text: str) -> float:
    value = float(text)
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds, got {text}")
    return value


def positive_seconds(text: str) -> float:
    value = seconds(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text}")
    return value


def seconds_between(low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = float(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {low:g} to {high:g} seconds, got {text}")
        return value

    return parse
