"""Shared fixtures."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.helpers import Child


def pytest_configure(config: pytest.Config) -> None:
    # Part of the default run (CI runs everything); ``pytest -m "not long"`` leaves them out.
    config.addinivalue_line("markers", "long: the longest runs (chaos with >= 300 kills)")


@pytest.fixture
def child() -> Iterator[Callable[..., Child]]:
    children: list[Child] = []

    def start(target: Callable[..., Any], *args: Any) -> Child:
        started = Child(target, *args)
        children.append(started)
        return started

    yield start
    for started in children:
        if started.process.is_alive():
            started.kill()


# Fixtures from tests/support: a real S3 API server (moto's, a process) and a bucket per
# test (s3_server.py); real unprivileged users for the shared-host attacks, and the command
# with which they run the installed ltxpool (users.py, tests/SECURITY.md).
from tests.support.s3_server import s3, s3_server  # noqa: E402, F401
from tests.support.users import ltxpool_for_others, nobody, shared_tmp, tenant  # noqa: E402, F401
