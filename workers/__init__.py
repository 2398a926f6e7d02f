"""ltxpool: keeps SQLite/LTX replica directories healthy on one host.

Layers, each a sub-package with a facade, imports pointing one way only
(checked by tests/unit/test_layering.py)::

    errors <- locks <- ltx <- replica <- replicate <- pool <- proving <- cli
"""

__all__: list[str] = []
