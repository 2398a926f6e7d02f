"""Open LTX files safely and verify them completely.

``open_ltx`` refuses what a replica directory should never contain in place of an
LTX file: a symlink (O_NOFOLLOW, so a link planted in a replica cannot make us read
or judge another file) or a FIFO/device/directory (opened non-blocking so a FIFO
cannot hang us, then refused by ``fstat``). ``verify_file`` reads the whole file
through the Decoder, which checks every rule it knows, and additionally checks a
Litestream-style name (``<min:016x>-<max:016x>.ltx``) against the header, since
compaction and restore trust the name.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

from ltxpool.ltx.decoder import Decoder
from ltxpool.ltx.errors import CorruptLTXError, LtxOpenError, LtxReadError
from ltxpool.ltx.header import HEADER_SIZE, MAGIC, Header, header_problem

__all__ = ["open_ltx", "verify_file", "parse_filename", "read_header", "parse_header", "name_problem"]

_NAME = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.ltx$")


def parse_filename(name: str) -> tuple[int, int] | None:
    """(min TXID, max TXID) from a Litestream LTX file name, or None if it is not one."""
    match = _NAME.match(name)
    if match is None:
        return None
    return int(match.group(1), 16), int(match.group(2), 16)


def _open_regular(name: str, dir_fd: int | None) -> int:
    """A blocking read-only descriptor of the regular, singly linked file ``name`` (see ``open_ltx``)."""
    try:
        fd = os.open(name if dir_fd is None else os.path.basename(name),
                     os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise CorruptLTXError(name, 0, "is a symbolic link; refusing to follow it") from None
        raise LtxOpenError.from_oserror(name, "open", exc) from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise CorruptLTXError(name, 0, f"not a regular file ({stat.filemode(st.st_mode)})")
        if st.st_nlink > 1:
            raise CorruptLTXError(name, 0, f"has {st.st_nlink} hard links; an LTX file never has more than one")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextmanager
def open_ltx(
    path: str | os.PathLike[str], *, dir_fd: int | None = None, verify_index: bool = False
) -> Iterator[Decoder]:
    """Open ``path`` (never through a symlink) and yield a Decoder with its header read.

    With ``dir_fd``, the file opened is the entry named by ``path``'s last component in
    that open directory (``path`` then only names it in messages): a replica's files
    are read from the directory that was listed, not from wherever the path leads now.
    A file with a second hard link is refused: no writer of LTX files makes one, so it
    is another file planted under an LTX name.
    """
    name = os.fspath(path)
    fd = _open_regular(name, dir_fd)
    try:
        stream = os.fdopen(fd, "rb", buffering=0)
    except BaseException:
        os.close(fd)
        raise
    with stream:
        yield Decoder(stream, name, verify_index=verify_index)


def read_header(path: str | os.PathLike[str], *, dir_fd: int | None = None) -> Header:
    """The validated header of ``path`` (opened as ``open_ltx`` does), reading 100 bytes and no more.

    For checking many files' names against their headers: a Decoder would buffer up
    to a MiB of each.
    """
    name = os.fspath(path)
    fd = _open_regular(name, dir_fd)
    try:
        raw = os.pread(fd, HEADER_SIZE, 0)
    except OSError as exc:
        raise LtxReadError.from_oserror(name, "read header", exc) from exc
    finally:
        os.close(fd)
    return parse_header(name, raw)


def parse_header(name: str, raw: bytes) -> Header:
    """The validated header in ``raw``, the first (up to) 100 bytes of the file ``name``."""
    if raw[: len(MAGIC)] != MAGIC:
        raise CorruptLTXError(name, 0, f"not an LTX file: magic {raw[:4]!r}, expected {MAGIC!r}")
    if len(raw) < HEADER_SIZE:
        raise CorruptLTXError(name, len(raw), f"file truncated in the header ({len(raw)} of {HEADER_SIZE} bytes)")
    _, header = Header.unpack(raw)
    problem = header_problem(header)
    if problem is not None:
        raise CorruptLTXError(name, problem[0], problem[1])
    return header


def name_problem(path: str | os.PathLike[str], header: Header) -> str | None:
    """Why ``header`` disagrees with the Litestream-style name of ``path``, or None.

    Compaction, restore and status take TXIDs from names (as Litestream does); a name
    is trusted only once it matches the header.
    """
    txids = parse_filename(os.path.basename(os.fspath(path)))
    if txids is None or txids == (header.min_txid, header.max_txid):
        return None
    return f"header holds TXIDs {header.min_txid}-{header.max_txid}, the file name says {txids[0]}-{txids[1]}"


def verify_file(path: str | os.PathLike[str], *, dir_fd: int | None = None) -> Header:
    """Verify every byte of one LTX file; return its header or raise CorruptLTXError."""
    with open_ltx(path, dir_fd=dir_fd, verify_index=True) as decoder:
        header = decoder.header
        txids = parse_filename(os.path.basename(decoder.path))
        if txids is not None and txids != (header.min_txid, header.max_txid):
            raise CorruptLTXError(
                decoder.path,
                16,
                f"header holds TXIDs {header.min_txid:016x}-{header.max_txid:016x}, the file name says "
                f"{txids[0]:016x}-{txids[1]:016x}",
            )
        deque(decoder.frames(), maxlen=0)
    return header
