"""Which bucket failures are tried again, and what one that is given up on says."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from ltxpool.remote import RemoteRequestError
from ltxpool.remote.errors import ShortResponse
from ltxpool.remote.retry import call


def _client_error(status: int, code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op")


def _failing(*errors: BaseException):  # noqa: ANN202 - a test double
    queue = list(errors)
    calls = []

    def step() -> str:
        calls.append(1)
        if queue:
            raise queue.pop(0)
        return "done"

    return step, calls


@pytest.mark.parametrize("error", [
    _client_error(500, "InternalError"), _client_error(503, "SlowDown"), _client_error(400, "RequestTimeout"),
    _client_error(429, "TooManyRequests"), EndpointConnectionError(endpoint_url="http://x"),
    ReadTimeoutError(endpoint_url="http://x"), ShortResponse("cut"), ConnectionResetError(104, "reset"),
])
def test_a_passing_failure_is_tried_again(error):
    step, calls = _failing(error, error)
    assert call("s3://b/k", "get", step, sleep=lambda _: None) == "done"
    assert len(calls) == 3


@pytest.mark.parametrize("error", [_client_error(403, "AccessDenied"), _client_error(404, "NoSuchBucket")])
def test_a_refusal_is_final_at_once_and_names_the_object_and_step(error):
    step, calls = _failing(error)
    with pytest.raises(RemoteRequestError) as caught:
        call("s3://b/k", "put object", step, sleep=lambda _: None)
    assert len(calls) == 1
    assert str(caught.value).startswith("s3://b/k: put object: ") and "HTTP" in caught.value.reason


def test_an_expected_code_reaches_the_caller_as_it_is():
    step, _ = _failing(_client_error(412, "PreconditionFailed"))
    with pytest.raises(ClientError):
        call("s3://b/k", "put", step, expected=("PreconditionFailed",), sleep=lambda _: None)


def test_a_failure_that_does_not_pass_is_given_up_after_the_attempts():
    step, calls = _failing(*[_client_error(503, "SlowDown")] * 10)
    with pytest.raises(RemoteRequestError, match="SlowDown"):
        call("s3://b/k", "put", step, attempts=4, sleep=lambda _: None)
    assert len(calls) == 4


def _slow_failing(seconds_per_try: float):  # noqa: ANN202 - a test double, as _failing
    """A step that always fails in a way that passes, each try taking ``seconds_per_try`` on a fake clock."""
    now = [0.0]
    calls = []

    def step() -> str:
        calls.append(1)
        now[0] += seconds_per_try
        raise EndpointConnectionError(endpoint_url="http://x")

    def sleep(seconds: float) -> None:
        now[0] += seconds

    return step, calls, sleep, lambda: now[0]


@pytest.mark.parametrize("patience, tries", [(60.0, 3), (float("inf"), 6)])
def test_a_store_that_never_answers_is_reported_once_its_patience_is_spent(patience, tries):
    """Tries of 25 s each (botocore's connection attempts to a dropped endpoint): the third ends
    past 60 s, so no fourth starts. Control: without the bound all six run, 150 s in all."""
    step, calls, sleep, clock = _slow_failing(25.0)
    with pytest.raises(RemoteRequestError) as caught:
        call("s3://b/k", "put", step, patience=patience, sleep=sleep, clock=clock)
    assert len(calls) == tries
    if tries < 6:
        assert caught.value.reason.endswith(f"still failing after {tries} tries in {clock():.0f} s")
        assert str(caught.value).startswith("s3://b/k: put: EndpointConnectionError")
