"""Reading LTX objects from a bucket as streams: bounded memory, seekable, retried.

:class:`ObjectReader` is a raw, seekable stream over one object. Each ``readinto``
is one ranged GET of at most the caller's buffer (the decoder's, which is at most
1 MiB and no larger than the object), read whole inside ``retry.call``: a response
cut short, a reset or a 503 costs that one range again, never the object. So
memory is one buffer per open object whatever its size, and an idle input of a
merge holds no connection. ``seek`` is free (the next read asks from there), which
is what the chain check's page-index lookups need.

:class:`RemoteSource` is the :class:`~ltxpool.replica.layout.LtxSource` of a
target's objects: the replica layer opens a listed object through it as it opens a
local file, and the decoder verifies it the same way (and checks the listed size
against the header, as a file's).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO, cast

from ltxpool.ltx import HEADER_SIZE, Decoder, Header, parse_header
from ltxpool.remote.errors import ShortResponse
from ltxpool.remote.layout import object_key
from ltxpool.remote.retry import call
from ltxpool.remote.target import RemoteTarget
from ltxpool.replica.layout import LtxFile

__all__ = ["ObjectReader", "RemoteSource", "read_range"]


def read_range(client: Any, target: RemoteTarget, key: str, start: int, length: int) -> bytes:
    """``length`` bytes of the object from ``start`` (fewer only at its end), retried as one step."""

    def get() -> bytes:
        response = client.get_object(Bucket=target.bucket, Key=key, Range=f"bytes={start}-{start + length - 1}")
        body = response["Body"]
        try:
            data = bytes(body.read())
        finally:
            body.close()
        expected = int(response.get("ContentLength", len(data)))
        if len(data) != expected:
            raise ShortResponse(f"response cut short: {len(data)} of {expected} bytes")
        return data

    return call(target.display(key), f"read bytes {start}-{start + length - 1}", get)


class ObjectReader(io.RawIOBase):
    """One object as a seekable raw stream of ``size`` bytes (the size listed)."""

    def __init__(self, client: Any, target: RemoteTarget, key: str, size: int) -> None:
        super().__init__()
        self._client = client
        self._target = target
        self._key = key
        self._size = size
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._position, os.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._position = base + offset
        return self._position

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        length = min(len(view), self._size - self._position)
        if length <= 0:
            return 0
        data = read_range(self._client, self._target, self._key, self._position, length)
        view[: len(data)] = data
        self._position += len(data)
        return len(data)


class RemoteSource:
    """Opens the listed objects of one target for the replica layer (``LtxFile.source``)."""

    def __init__(self, client: Any, target: RemoteTarget) -> None:
        self.client = client
        self.target = target

    def key_of(self, f: LtxFile) -> str:
        return object_key(self.target, f.level, f.min_txid, f.max_txid)

    @contextmanager
    def open(self, f: LtxFile, *, verify_index: bool = False) -> Iterator[Decoder]:
        with ObjectReader(self.client, self.target, self.key_of(f), f.size) as stream:
            yield Decoder(cast(BinaryIO, stream), f.path, verify_index=verify_index, size=f.size)

    def read_header(self, f: LtxFile) -> Header:
        raw = read_range(self.client, self.target, self.key_of(f), 0, min(HEADER_SIZE, f.size)) if f.size else b""
        return parse_header(f.path, raw)
