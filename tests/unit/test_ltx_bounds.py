"""A file is no larger than its header allows, and has no holes, before the decoder reads on.

Each attack is a valid header followed by a hole made with ``truncate`` (no disk used).
The control switches the checks off in the same run: the same file is then read to
its end. Bytes read are measured from ``/proc/self/io`` (``rchar``), not time.
"""

from __future__ import annotations

import os
import random
from collections import deque
from pathlib import Path

import pytest

from ltxpool.ltx import HEADER_FLAG_NO_CHECKSUM, Encoder, Header, open_ltx, verify_file
from ltxpool.ltx import decoder as decoder_module
from ltxpool.ltx.bounds import first_hole, max_file_size
from ltxpool.ltx.errors import CorruptLTXError

GIB = 1 << 30
MIB = 1 << 20


def _header(commit: int, page_size: int = 4096, txid: int = 2) -> Header:
    return Header(flags=HEADER_FLAG_NO_CHECKSUM, page_size=page_size, commit=commit, min_txid=txid, max_txid=txid)


def _sparse(path: Path, header: Header, size: int) -> Path:
    """A valid header, then a hole to ``size`` bytes: what ``truncate -s`` makes of it."""
    path.write_bytes(header.encode())
    os.truncate(path, size)
    assert os.stat(path).st_blocks * 512 < MIB, "the file must be sparse for the attack to cost nothing"
    return path


def _bytes_read() -> int:
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))


def _read_all(path: Path) -> None:
    with open_ltx(path) as decoder:
        deque(decoder.pages(), maxlen=0)


def test_a_sparse_file_larger_than_its_header_allows_is_refused_before_reading_it(tmp_path: Path) -> None:
    path = _sparse(tmp_path / "0000000000000002-0000000000000002.ltx", _header(commit=1), 4 * GIB)
    limit = max_file_size(_header(commit=1))
    for read in (_read_all, verify_file):
        before = _bytes_read()
        with pytest.raises(CorruptLTXError) as caught:
            read(path)
        assert _bytes_read() - before < 2 * MIB
        assert str(caught.value) == (
            f"{path}: corrupt at byte {limit}: size 4 GiB ({4 * GIB} bytes) exceeds what its header allows "
            f"({limit} bytes for 1 pages of 4096 bytes)"
        )


def test_a_hole_is_refused_where_the_header_would_allow_the_size(tmp_path: Path) -> None:
    # 2**32-1 pages of 4 KiB: the header allows ~17 TB, so only the hole check stops it.
    header = _header(commit=(1 << 32) - 1)
    path = _sparse(tmp_path / "0000000000000002-0000000000000002.ltx", header, 4 * GIB)
    assert max_file_size(header) > 4 * GIB
    before = _bytes_read()
    with pytest.raises(CorruptLTXError) as caught:
        verify_file(path)
    assert _bytes_read() - before < 2 * MIB
    assert caught.value.offset == 4096
    assert f"sparse file: a hole at byte 4096 of {4 * GIB}" in caught.value.reason


def test_control_without_the_checks_the_same_sparse_files_are_read_to_their_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    size = 256 * MIB
    too_large = _sparse(tmp_path / "a.ltx", _header(commit=1), size)
    holed = _sparse(tmp_path / "b.ltx", _header(commit=(1 << 32) - 1), size)
    for path in (too_large, holed):
        with pytest.raises(CorruptLTXError):
            _read_all(path)
    monkeypatch.setattr(decoder_module, "size_problem", lambda header, size: None)
    monkeypatch.setattr(decoder_module, "first_hole", lambda fd, size: None)
    for path in (too_large, holed):
        before = _bytes_read()
        with pytest.raises(CorruptLTXError, match="page index length field"):
            _read_all(path)
        assert _bytes_read() - before >= size


@pytest.mark.parametrize("page_size", [512, 4096, 65536])
def test_the_size_bound_holds_for_the_largest_files_an_encoder_writes(tmp_path: Path, page_size: int) -> None:
    rng = random.Random(page_size)
    commit = 40
    header = Header(flags=HEADER_FLAG_NO_CHECKSUM, page_size=page_size, commit=commit, min_txid=1, max_txid=1)
    path = tmp_path / "0000000000000001-0000000000000001.ltx"
    with open(path, "wb") as sink:
        encoder = Encoder(sink, header)
        for pgno in range(1, commit + 1):
            encoder.write_page(pgno, rng.randbytes(page_size))  # incompressible: the largest frames
        encoder.finish()
    size = path.stat().st_size
    # Legacy LZ4 frames are allowed twice a block (payload.max_legacy_frame_size): a loose bound, still linear.
    assert size <= max_file_size(header) < 3 * size
    with open(path, "rb") as f:
        assert first_hole(f.fileno(), size) is None
    verify_file(path)
