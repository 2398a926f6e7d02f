"""The conditional-write probe against a store that does not answer: one step's retries, no more."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError

from ltxpool.remote import RemoteRequestError, RemoteTarget
from ltxpool.remote import retry as retry_module
from ltxpool.remote.lease import check_conditional_writes


class _Unanswering:
    """A client whose every request fails to connect; it counts what it was asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def put_object(self, **_: Any) -> None:
        self.asked.append("put")
        raise EndpointConnectionError(endpoint_url="http://store")

    def delete_object(self, **_: Any) -> None:
        self.asked.append("delete")
        raise EndpointConnectionError(endpoint_url="http://store")


def test_a_probe_that_could_not_be_written_is_not_deleted_so_the_failure_is_reported_after_one_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each request to a store whose packets are dropped costs botocore's connect timeouts; the
    probe's clean-up after a first PUT that never arrived would double the wait for the error."""
    monkeypatch.setattr(retry_module.random, "uniform", lambda low, high: 0.0)
    client = _Unanswering()
    with pytest.raises(RemoteRequestError, match="write lease: EndpointConnectionError"):
        check_conditional_writes(client, RemoteTarget("bucket", "db"))
    assert client.asked == ["put"] * retry_module.ATTEMPTS
