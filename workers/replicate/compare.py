"""Page-for-page comparison of a restored database with its (possibly live) source.

The source is read through ``ltxpool.replicate.sqlite_source``: a consistent image taken under
SQLite's own locks, WAL frames included, streamed page by page (bounded memory, any
size). The backup API is no oracle here: it bumps the copy's change counter. The lock
page is never compared: SQLite never uses it and LTX never stores it.
"""

from __future__ import annotations

import os

from ltxpool.replicate.errors import SourceDiffersError
from ltxpool.replicate.sqlite_source import SqliteSource

__all__ = ["compare_with_source"]


def compare_with_source(restored: str | os.PathLike[str], source: str | os.PathLike[str]) -> int:
    """Raise naming the first page where ``restored`` differs from ``source``; return the page count."""
    restored, source = os.fspath(restored), os.fspath(source)
    with SqliteSource(source) as database, database.capture(None) as image, open(restored, "rb") as ours:
        size = image.page_size
        pages = os.fstat(ours.fileno()).st_size // size
        if pages != image.commit:
            raise SourceDiffersError(restored, "compare", None, f"has {pages} pages, the source {source} has {image.commit}")
        for pgno, page in image.pages():
            if os.pread(ours.fileno(), size, (pgno - 1) * size) != page:
                raise SourceDiffersError(restored, "compare", None, f"page {pgno} differs from the source {source}")
        return image.commit
