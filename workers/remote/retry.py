"""One request to the bucket, retried with backoff while the failure is passing.

botocore retries each call itself (``mode="standard"``: 5xx, throttling, timeouts,
reset connections, a few times with jittered backoff). That covers one HTTP
exchange; it does not cover reading a response body that breaks half way, nor an
outage longer than its few attempts. :func:`call` wraps a whole step -- a request
*and* the reading of its body -- and tries it again, with exponential backoff and
full jitter, while the failure is one that passes: HTTP 5xx, ``SlowDown`` and the
other throttling codes, timeouts, connections refused, reset or cut short. Anything
else (403, 404, a 412 precondition) is final at once: retrying a refusal only
delays it. A failure it gives up on becomes :class:`RemoteRequestError` naming the
object and the step; codes the caller handles itself (``expected``) are re-raised as
botocore's ``ClientError``.

A step is also not tried again once ``patience`` seconds have passed since its first
try began. Against a store that answers at once (a refused connection, a 503) the six
tries take seconds; against one that never answers (an endpoint whose packets are
dropped) each try is botocore's attempts of up to ``connect_timeout`` each, about 50 s
measured, and six of them would keep the failure unreported for five minutes. A try
in progress is never cut short: the bound only decides whether another one starts.

Retrying is safe only for idempotent steps: every step ltxpool retries is one (a
PUT of the same bytes to the same key, a ranged GET, a listing page, a multipart
part). Where a retried step can meet its own earlier success (a conditional PUT, a
multipart completion whose answer was lost) the caller checks what the bucket holds.
"""

from __future__ import annotations

import builtins
import random
import time
from collections.abc import Callable, Collection
from typing import TypeVar

from botocore.exceptions import BotoCoreError, ClientError, ConnectionError, HTTPClientError, IncompleteReadError

from ltxpool.remote.errors import RemoteRequestError, ShortResponse

__all__ = ["ATTEMPTS", "PATIENCE", "call", "error_code", "is_passing", "status_of"]

_T = TypeVar("_T")

#: Whole steps tried at most this often (each one also retried by botocore).
ATTEMPTS = 6
#: No try of a step starts this many seconds after its first one began.
PATIENCE = 60.0
_BASE_DELAY = 0.1
_MAX_DELAY = 5.0

# Codes S3 and the common S3-compatible stores answer when the failure passes.
_PASSING_CODES = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled",
    "RequestLimitExceeded", "TooManyRequestsException", "ProvisionedThroughputExceededException",
    "RequestTimeout", "RequestTimeoutException", "InternalError", "ServiceUnavailable",
    "ConditionalRequestConflict",  # S3: a concurrent conditional write to the key; try again
})


# A socket error that reached us past botocore; never a local file's OSError (a step
# reads local files outside ``call``).
_SOCKET_ERRORS: tuple[type[BaseException], ...] = (builtins.ConnectionError, TimeoutError)


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def status_of(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def is_passing(exc: BaseException) -> bool:
    """Whether trying the same step again may succeed."""
    if isinstance(exc, ClientError):
        return status_of(exc) >= 500 or status_of(exc) == 429 or error_code(exc) in _PASSING_CODES
    return isinstance(exc, (HTTPClientError, ConnectionError, IncompleteReadError, ShortResponse, *_SOCKET_ERRORS))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        message = error.get("Message") or ""
        return f"{error.get('Code') or status_of(exc)}{': ' + message if message else ''} (HTTP {status_of(exc)})"
    return f"{type(exc).__name__}: {exc}"


def call(
    where: str,
    step: str,
    fn: Callable[[], _T],
    *,
    expected: Collection[str] = (),
    attempts: int = ATTEMPTS,
    patience: float = PATIENCE,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> _T:
    """``fn()``, tried up to ``attempts`` times, for up to ``patience`` seconds, while it
    fails in a way that passes.

    ``where`` (``s3://bucket/key``) and ``step`` name the request in the error.
    A ``ClientError`` whose code is in ``expected`` goes to the caller unchanged.
    """
    started = clock()
    for attempt in range(attempts):
        try:
            return fn()
        except ClientError as exc:
            if error_code(exc) in expected:
                raise
            failure: BaseException = exc
        except (BotoCoreError, ShortResponse, *_SOCKET_ERRORS) as exc:
            failure = exc
        if not is_passing(failure) or attempt == attempts - 1:
            raise RemoteRequestError(where, step, None, _describe(failure)) from failure
        # Full jitter: pools that failed together do not come back together.
        delay = random.uniform(0, min(_MAX_DELAY, _BASE_DELAY * 2 ** attempt))
        elapsed = clock() - started
        if elapsed + delay >= patience:
            raise RemoteRequestError(where, step, None, f"{_describe(failure)}; still failing after "
                                     f"{attempt + 1} tries in {elapsed:.0f} s") from failure
        sleep(delay)
    raise AssertionError("unreachable")
