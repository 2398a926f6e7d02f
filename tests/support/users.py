"""Real unprivileged users for the attacks: the suite runs as root, attackers do not.

``nobody`` is "another local user" (may read what others may read, owns nothing of
ours). A *tenant* is a user created for the session with ``useradd`` and removed at
its end: it owns a replica directory, as a tenant on a shared host does. Attacks run
as real processes of these users (``subprocess`` with ``user=``/``group=``), so the
kernel, not the test, decides what they can do.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pytest

__all__ = ["User", "nobody", "tenant", "shared_tmp", "run_as", "start_as", "python_as", "ltxpool_for_others"]


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int


def _user(name: str) -> User:
    entry = pwd.getpwnam(name)
    return User(entry.pw_name, entry.pw_uid, entry.pw_gid)


@pytest.fixture(scope="session")
def nobody() -> User:
    if os.geteuid() != 0:
        pytest.fail("the shared-host tests run as root (as CI does): they need to act as other users")
    return _user("nobody")


@pytest.fixture(scope="session")
def tenant() -> Iterator[User]:
    """A fresh local user for the session; removed (with its files' ownership left numeric) after."""
    if os.geteuid() != 0:
        pytest.fail("the shared-host tests run as root (as CI does): they need to act as other users")
    name = f"ltxt{secrets.token_hex(3)}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group", name],
                   check=True, capture_output=True)
    try:
        yield _user(name)
    finally:
        subprocess.run(["userdel", name], check=False, capture_output=True)


@pytest.fixture
def shared_tmp() -> Iterator[str]:
    """A root-owned 0755 directory other users can traverse (pytest's tmp_path is 0700)."""
    path = tempfile.mkdtemp(prefix="ltxpool-shared-", dir="/tmp")
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def run_as(user: User, argv: Sequence[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` as ``user`` to completion; output captured as text."""
    return subprocess.run(list(argv), user=user.uid, group=user.gid, extra_groups=[], capture_output=True,
                          text=True, timeout=timeout, check=False, cwd="/")


def start_as(user: User, argv: Sequence[str]) -> subprocess.Popen[str]:
    """Start ``argv`` as ``user`` in the background (the caller stops it)."""
    return subprocess.Popen(list(argv), user=user.uid, group=user.gid, extra_groups=[], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd="/")


#: The system's Python, which every user may run (the suite's own interpreter may live in
#: root's home, 0700). Attack snippets use its standard library only.
SYSTEM_PYTHON = shutil.which("python3", path="/usr/bin:/bin") or sys.executable


def python_as(user: User, source: str, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run a standard-library Python snippet as ``user`` (``sys.argv[1:]`` are ``args``)."""
    return run_as(user, [SYSTEM_PYTHON, "-c", source, *args], timeout=timeout)


# Prints, one per line, where each top-level package the CLI and every pool role import
# lives, leaving out the standard library: what another user needs to run ltxpool.
_IMPORTED = """
import importlib, pkgutil, sys, ltxpool, ltxpool.cli
for found in pkgutil.walk_packages(ltxpool.__path__, "ltxpool."):
    if not found.name.endswith(".__main__"):
        importlib.import_module(found.name)
for name, module in sorted(sys.modules.items()):
    spec = getattr(module, "__spec__", None)
    if "." in name or name in sys.stdlib_module_names or spec is None or spec.origin in (None, "built-in", "frozen"):
        continue
    print((spec.submodule_search_locations or [spec.origin])[0])
"""

#: Runs the ltxpool CLI from the directory given as its first argument.
_CLI_FROM = "import sys; sys.path.insert(0, sys.argv.pop(1)); from ltxpool.cli import main; sys.exit(main(sys.argv[1:]))"


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


@pytest.fixture(scope="session")
def ltxpool_for_others() -> Iterator[list[str]]:
    """The command (before its arguments) with which another user runs the installed ltxpool.

    The suite's interpreter and its packages may sit under root's home (0700, as on CI),
    where no other user may enter. The installed files (where the suite's interpreter
    imports them from, never the checkout's ``workers/``) are linked (or copied) into a
    0755 directory of their own, put first on ``sys.path``, and the system's Python of
    the same version runs them.
    """
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import sys; print(sys.version_info[:2])"],
                           capture_output=True, text=True, check=True)
    if probe.stdout.strip() != str(sys.version_info[:2]):
        pytest.fail(f"another user runs ltxpool with {SYSTEM_PYTHON}, Python {probe.stdout.strip()}; "
                    f"the suite's is {sys.version_info[:2]}")
    imported = subprocess.run([sys.executable, "-c", _IMPORTED], capture_output=True, text=True, check=True)
    site = tempfile.mkdtemp(prefix="ltxpool-site-", dir="/tmp")
    os.chmod(site, 0o755)
    try:
        for where in imported.stdout.split():
            target = os.path.join(site, os.path.basename(where))
            if os.path.isdir(where):
                shutil.copytree(where, target, copy_function=_link_or_copy,
                                ignore=shutil.ignore_patterns("__pycache__"))
            else:
                _link_or_copy(where, target)
        subprocess.run(["chmod", "-R", "a+rX", site], check=True)
        yield [SYSTEM_PYTHON, "-c", _CLI_FROM, site]
    finally:
        shutil.rmtree(site, ignore_errors=True)
