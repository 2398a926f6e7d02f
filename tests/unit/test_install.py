"""The tests run against what was installed, and the install holds every package.

A sub-package left out of setup.cfg's ``packages`` vanishes from the wheel without a
warning, so every package folder of the checkout (``locks/``, ``workers/``) must be in
the installed distribution ``ltxpool``, under its installed name.
"""

from __future__ import annotations

import configparser
import importlib.metadata
import importlib.util
import os

import ltxpool

CHECKOUT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FOLDERS = {"workers": "ltxpool", "locks": "ltxpool.locks"}


def checkout_packages() -> set[str]:
    """Installed names of the checkout's package folders (those with an ``__init__.py``)."""
    names = set()
    for folder, name in FOLDERS.items():
        for root, dirs, files in os.walk(os.path.join(CHECKOUT, folder)):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            if "__init__.py" in files:
                relative = os.path.relpath(root, os.path.join(CHECKOUT, folder))
                names.add(name if relative == "." else ".".join([name, *relative.split(os.sep)]))
    return names


def test_every_package_folder_is_in_the_installed_distribution() -> None:
    expected = checkout_packages()
    assert {"ltxpool", "ltxpool.locks", "ltxpool.ltx", "ltxpool.cli"} <= expected
    files = {str(path) for path in importlib.metadata.files("ltxpool") or []}
    if "ltxpool/__init__.py" in files:  # a regular install: the files themselves are listed
        missing = {name for name in expected if name.replace(".", "/") + "/__init__.py" not in files}
        assert not missing, f"packages missing from the installed distribution: {sorted(missing)}"
        assert "ltxpool/py.typed" in files
        tops = {path.split("/")[0] for path in files if not path.startswith("..")}  # ../bin/ltxpool: the script
        assert {top for top in tops if not top.endswith(".dist-info")} == {"ltxpool"}, tops
    else:  # an editable install lists no modules: check the list the wheel would be built from
        config = configparser.ConfigParser()
        config.read(os.path.join(CHECKOUT, "setup.cfg"))
        listed = set(config["options"]["packages"].split())
        assert expected == listed, f"setup.cfg packages differ from the folders: {sorted(expected ^ listed)}"
    for name in expected:
        assert importlib.util.find_spec(name) is not None, name


def test_the_installed_package_is_the_only_import_name() -> None:
    """``workers`` and ``locks`` are folders of the checkout, never installed import names.

    (Run from the repository root, ``python -m`` puts the checkout on ``sys.path``, so
    they may resolve there; they must not resolve anywhere else.)
    """
    for name in FOLDERS:
        spec = importlib.util.find_spec(name)
        assert spec is None or (spec.origin or "").startswith(CHECKOUT + os.sep), spec
    scripts = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="console_scripts")
               if ep.dist is not None and ep.dist.name == "ltxpool"}
    assert scripts == {"ltxpool": "ltxpool.cli:main"}
    assert ltxpool.__name__ == "ltxpool"


def test_no_test_imports_the_checkout_folders() -> None:
    """Tests import ``ltxpool``; an import of ``workers`` or ``locks`` would test the checkout."""
    import ast

    offenders = []
    tests = os.path.join(CHECKOUT, "tests")
    for root, dirs, files in os.walk(tests):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(root, name)
                with open(path) as source:
                    tree = ast.parse(source.read(), path)
                for node in ast.walk(tree):
                    targets = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                               else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
                    offenders += [f"{path}:{node.lineno}: {target}" for target in targets
                                  if target.split(".")[0] in FOLDERS]
    assert offenders == []
