"""``ltxpool dump FILE [--json]``: show what one LTX file holds, verifying as it goes.

Header fields, one line per page frame (page number, frame offset, frame size,
compressed size, page checksum), the trailer, and whether the whole file verified.
A corrupt file is dumped up to the fault, then the fault is shown and the exit
status is 1: dump is how one looks at a file that ``verify`` rejected. TXIDs and
checksums are 16-digit hex (as Litestream prints them and JSON cannot hold u64s
exactly); ``--json`` prints a single object.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

from ltxpool.display import escape
from ltxpool.errors import LtxpoolError
from ltxpool.ltx import (
    HEADER_FLAG_NO_CHECKSUM,
    Header,
    Trailer,
    combine,
    open_ltx,
    page_checksum,
)
from ltxpool.ltx.checksum import EMPTY_DATABASE_CHECKSUM

__all__ = ["NAME", "HELP", "add_arguments", "run"]

NAME = "dump"
HELP = "Print the header, page frames, checksums and trailer of one LTX file."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="the LTX file")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    report: dict[str, Any] = {"path": args.file, "header": None, "pages": [], "trailer": None}
    text = not args.json
    pages_checksum = EMPTY_DATABASE_CHECKSUM
    error = None
    try:
        with open_ltx(args.file, verify_index=True) as decoder:
            report["header"] = _header(decoder.header)
            if text:
                _print_header(decoder.path, decoder.header)
            for frame in decoder.frames():
                checksum = page_checksum(frame.pgno, frame.data)
                pages_checksum = combine(pages_checksum, checksum)
                page = {
                    "pgno": frame.pgno,
                    "offset": frame.offset,
                    "size": frame.size,
                    "compressed_size": frame.payload_size,
                    "flags": frame.flags,
                    "checksum": _hex(checksum),
                }
                if text:
                    print(f"{frame.pgno:>10} {frame.offset:>12} {frame.size:>10} {frame.payload_size:>10}  {_hex(checksum)}")
                else:
                    report["pages"].append(page)
            report["trailer"] = _trailer(decoder.trailer)
    except LtxpoolError as exc:
        error = str(exc)
    report["pages_checksum"] = _hex(pages_checksum)
    report["verified"] = error is None
    report["error"] = error
    if text:
        _print_trailer(report)
    else:
        print(json.dumps(report, indent=2))
    if error is not None:
        print(f"ltxpool: error: {error}", file=sys.stderr)
        return 1
    return 0


def _hex(value: int) -> str:
    return f"{value:016x}"


def _header(header: Header) -> dict[str, Any]:
    return {
        "flags": header.flags,
        "no_checksum": bool(header.flags & HEADER_FLAG_NO_CHECKSUM),
        "page_size": header.page_size,
        "commit": header.commit,
        "min_txid": _hex(header.min_txid),
        "max_txid": _hex(header.max_txid),
        "timestamp": header.timestamp,
        "time": _time(header.timestamp),
        "pre_apply_checksum": _hex(header.pre_apply_checksum),
        "wal_offset": header.wal_offset,
        "wal_size": header.wal_size,
        "wal_salt1": header.wal_salt1,
        "wal_salt2": header.wal_salt2,
        "node_id": header.node_id,
        "snapshot": header.is_snapshot,
    }


def _trailer(trailer: Trailer | None) -> dict[str, str] | None:
    if trailer is None:
        return None
    return {"post_apply_checksum": _hex(trailer.post_apply_checksum), "file_checksum": _hex(trailer.file_checksum)}


def _time(timestamp_ms: int) -> str | None:
    try:
        moment = datetime.fromtimestamp(timestamp_ms / 1000, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _print_header(path: str, header: Header) -> None:
    flags = " (no-checksum)" if header.flags & HEADER_FLAG_NO_CHECKSUM else ""
    print("# header")
    print(f"path:               {escape(path)}")
    print(f"flags:              0x{header.flags:08x}{flags}")
    print(f"page size:          {header.page_size}")
    print(f"commit:             {header.commit} pages")
    print(f"min TXID:           {_hex(header.min_txid)} ({header.min_txid})")
    print(f"max TXID:           {_hex(header.max_txid)} ({header.max_txid})")
    print(f"timestamp:          {_time(header.timestamp)} ({header.timestamp})")
    print(f"pre-apply checksum: {_hex(header.pre_apply_checksum)}")
    print(f"WAL offset/size:    {header.wal_offset} / {header.wal_size}")
    print(f"WAL salts:          {header.wal_salt1:08x} {header.wal_salt2:08x}")
    print(f"node ID:            {header.node_id}")
    print(f"snapshot:           {'yes' if header.is_snapshot else 'no'}")
    print()
    print("# pages")
    print(f"{'pgno':>10} {'offset':>12} {'frame':>10} {'compressed':>10}  checksum")


def _print_trailer(report: dict[str, Any]) -> None:
    trailer = report["trailer"] or {}
    print()
    print("# trailer")
    print(f"post-apply checksum: {trailer.get('post_apply_checksum', '-')}")
    print(f"file checksum:       {trailer.get('file_checksum', '-')}")
    print(f"pages checksum:      {report['pages_checksum']} (XOR of the page checksums above)")
    print(f"verified:            {'yes' if report['verified'] else 'NO: ' + report['error']}")
