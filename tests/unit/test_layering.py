"""The layering, read from the installed package's imports: every arrow points down.

    errors, display <- locks <- ltx <- replica <- remote <- replicate <- discovery <- pool <- proving <- cli

A module may import its own layer and the layers below it, never one above. Two
layers are stricter: ``locks`` knows no LTX (it imports only ``errors``), and ``ltx``
is pure bytes (it imports only ``errors``). Nothing imports ``cli`` but ``cli``. The
bottom layer is the two modules every layer needs: ``errors`` and ``display``.
"""

from __future__ import annotations

import ast
import importlib.util
import pkgutil

import ltxpool
import ltxpool.locks

ORDER = ["errors", "locks", "ltx", "replica", "remote", "replicate", "discovery", "pool", "proving", "cli"]
ONLY = {"locks": {"errors", "locks"}, "ltx": {"errors", "ltx"}}


def modules() -> dict[str, str]:
    """Every module of the installed package: name -> source file."""
    found = {"ltxpool": ltxpool.__file__, "ltxpool.locks": ltxpool.locks.__file__}
    # ltxpool.locks is walked on its own: it comes from another folder (locks/), so an
    # editable install's ltxpool.__path__ does not hold it.
    for package in (ltxpool, ltxpool.locks):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            spec = importlib.util.find_spec(info.name)
            assert spec is not None and spec.origin is not None, info.name
            found[info.name] = spec.origin
    return found


BOTTOM = {"errors", "display"}


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] not in BOTTOM else "errors"


def imports_of(name: str, path: str) -> list[tuple[int, str]]:
    """(line, imported module) for every import of ours in the file, wherever it stands."""
    with open(path) as source:
        tree = ast.parse(source.read(), path)
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.append((node.lineno, base))
    return sorted((line, target) for line, target in found if target == "ltxpool" or target.startswith("ltxpool."))


def test_every_layer_exists_and_holds_modules() -> None:
    layers = {layer(name) for name in modules()}
    assert layers == set(ORDER)


def arrows_against(name: str, path: str) -> list[str]:
    """Every import in the file that points up the layering (or sideways where not allowed)."""
    own = layer(name)
    allowed = ONLY.get(own, set(ORDER[: ORDER.index(own) + 1]))
    return [f"{path}:{line}: {name} ({own}) imports {target} ({layer(target)})"
            for line, target in imports_of(name, path) if layer(target) not in allowed]


def test_every_import_points_down_the_layering() -> None:
    wrong = [arrow for name, path in sorted(modules().items()) for arrow in arrows_against(name, path)]
    assert not wrong, "\n".join(wrong)


def test_the_layering_check_sees_an_arrow_against_it(tmp_path) -> None:  # noqa: ANN001 - pytest fixture
    """The control: upward imports, absolute, relative or inside a function, are reported."""
    bad = tmp_path / "compactor.py"
    bad.write_text(
        "from ltxpool.replica.layout import Replica\n"
        "from ltxpool.pool.supervisor import Supervisor\n"
        "def f():\n    from ..cli import main\n"
        "import ltxpool.replicate\n"
    )
    arrows = arrows_against("ltxpool.replica.compactor", str(bad))
    assert [arrow.split(": ", 1)[1] for arrow in arrows] == [
        "ltxpool.replica.compactor (replica) imports ltxpool.pool.supervisor (pool)",
        "ltxpool.replica.compactor (replica) imports ltxpool.cli (cli)",
        "ltxpool.replica.compactor (replica) imports ltxpool.replicate (replicate)",
    ]
    bad.write_text("from ltxpool.locks.dirlock import DirLock\n")
    assert arrows_against("ltxpool.ltx.decoder", str(bad)), "ltx is pure bytes: it may not use the locks"
