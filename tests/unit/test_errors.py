"""One home per layer for exception types, one root, and every error pickles whole."""

from __future__ import annotations

import errno
import inspect
import pickle

import pytest

import ltxpool.discovery.errors
import ltxpool.errors
import ltxpool.locks.errors
import ltxpool.ltx.errors
import ltxpool.pool.errors
import ltxpool.remote.errors
import ltxpool.replica.errors
import ltxpool.replicate.errors
from ltxpool.errors import LtxpoolError
from ltxpool.locks.holders import Holder

HOMES = [ltxpool.errors, ltxpool.locks.errors, ltxpool.ltx.errors, ltxpool.replica.errors,
         ltxpool.remote.errors, ltxpool.replicate.errors, ltxpool.discovery.errors, ltxpool.pool.errors]
# The few that are not path errors: internal to the codec (turned into CorruptLTXError),
# the WAL parser's (the caller names the file), the supervisor giving up on a child, and
# the remote layer's "this answer broke off, try again" (turned into RemoteRequestError), the
# shipper's "stop between two uploads" (never leaves the shipper), and ``replicate``'s "the
# step outlived the stop's grace" (raised by its alarm, caught by the CLI).
NOT_ROOTED = {"VarintError", "PayloadError", "WalFormatError", "CrashLoop", "ShortResponse", "ShipperStopping",
              "StepAbandoned"}
ARGS = {
    "LockTimeout": ("/r/ltx/0", "writing", 0.25, (Holder(4242, 65534, "nobody", "python3", 1, "READ"),)),
    "ClaimHeld": ("/r/ltx/1/.ltxpool.claim", "claim", (Holder(4242, 0, "root", "sleep\x1b", 1, "WRITE"),)),
    "CorruptLTXError": ("/r/ltx/0/a.ltx", 17, "bad magic"),
    "VarintError": (40, "too long"),
    "PayloadError": (3, "short block"),
    "WalFormatError": ("bad header",),
    "CrashLoop": ("worker-1", 6, 60.0, "ValueError: x"),
    "ShortResponse": ("response cut short: 3 of 9 bytes",),
    "ShipperStopping": (),
    "LeaseHeld": ("s3://b/db/.ltxpool-lease", "acquire lease", None, "held by h:1:t", "h:1:t"),
}


def error_types() -> list[type[BaseException]]:
    return [cls for home in HOMES for name, cls in vars(home).items()
            if inspect.isclass(cls) and issubclass(cls, BaseException) and cls.__module__ == home.__name__
            and name in home.__all__]


@pytest.mark.parametrize("cls", error_types(), ids=lambda cls: cls.__name__)
def test_every_error_pickles_with_its_type_message_and_fields(cls: type[BaseException]) -> None:
    args = ARGS.get(cls.__name__, ("/r/ltx/1", "some step", errno.EIO, "it failed"))
    error = cls(*args)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is cls
    assert str(copy) == str(error)
    assert vars(copy) == vars(error)
    if cls.__name__ not in NOT_ROOTED:
        assert isinstance(copy, LtxpoolError)
        assert (copy.path, copy.step) == (error.path, error.step)


def test_every_error_type_lives_in_its_layers_errors_module() -> None:
    """No module outside the homes defines an exception class."""
    import importlib
    import pkgutil

    import ltxpool
    import ltxpool.locks

    strays = []
    for package in (ltxpool, ltxpool.locks):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if info.name.endswith(".errors") or info.name.endswith("__main__"):
                continue
            module = importlib.import_module(info.name)
            strays += [f"{info.name}.{name}" for name, cls in vars(module).items()
                       if inspect.isclass(cls) and issubclass(cls, BaseException) and cls.__module__ == info.name]
    assert strays == []


def test_from_oserror_keeps_the_subclass_step_and_errno() -> None:
    from ltxpool.replica.errors import JanitorError

    error = JanitorError.from_oserror("/r/ltx/0", "list directory", OSError(errno.EACCES, "Permission denied"))
    assert type(error) is JanitorError
    assert str(error) == "/r/ltx/0: list directory: Permission denied [EACCES]"
