"""``ltxpool verify`` and ``ltxpool dump`` on real replica trees under tmp_path."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from ltxpool.cli import main
from ltxpool.ltx import HEADER_FLAG_NO_CHECKSUM, Decoder, Encoder, Header
from tests.support.helpers import run_ltxpool

PAGE = 1024


def write(path: Path, min_txid: int, max_txid: int, pgnos: list[int], commit: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = Header(flags=HEADER_FLAG_NO_CHECKSUM, page_size=PAGE, commit=commit, min_txid=min_txid,
                    max_txid=max_txid, timestamp=1_700_000_000_000)  # fmt: skip
    with open(path, "wb") as out:
        encoder = Encoder(out, header)
        for pgno in pgnos:
            encoder.write_page(pgno, bytes([pgno]) * (PAGE // 2) + os.urandom(PAGE // 2))
        encoder.finish()
    return path


@pytest.fixture
def replica(tmp_path: Path) -> Path:
    """A replica with levels 0, 1 and 9, plus things verify must leave alone."""
    root = tmp_path / "replica"
    ltx = root / "ltx"
    write(ltx / "9" / "0000000000000001-0000000000000002.ltx", 1, 2, [1, 2, 3], 3)
    write(ltx / "1" / "0000000000000001-0000000000000003.ltx", 1, 3, [1, 2, 3, 4], 4)
    write(ltx / "0" / "0000000000000003-0000000000000003.ltx", 3, 3, [4], 4)
    write(ltx / "0" / "0000000000000004-0000000000000004.ltx", 4, 4, [2, 5], 5)
    (ltx / "0" / ".ltxpool.lock").write_bytes(b"")
    (ltx / "0" / "0000000000000005-0000000000000005.ltx.tmp").write_bytes(b"half a file")
    (root / "quarantine").mkdir()
    (root / "quarantine" / "0000000000000009-0000000000000009.ltx").write_bytes(b"garbage")
    return root


def corrupt(path: Path, offset: int = -3) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(data)


def test_verify_of_a_healthy_replica_prints_the_summary_and_exits_0(replica: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", str(replica)]) == 0
    out = capsys.readouterr().out
    assert out == "verified 4 files: 4 ok, 0 bad\nchecked 1 restore chain: 0 broken\n"


def test_verify_accepts_the_ltx_directory_a_level_directory_and_files(replica: Path, capsys: pytest.CaptureFixture[str]) -> None:
    level0 = replica / "ltx" / "0"
    snapshot = replica / "ltx" / "9" / "0000000000000001-0000000000000002.ltx"
    assert main(["verify", str(replica / "ltx"), str(level0), str(snapshot)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "verified 7 files: 7 ok, 0 bad"


def test_verify_names_each_bad_file_and_its_cause_and_exits_1(replica: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = replica / "ltx" / "0" / "0000000000000004-0000000000000004.ltx"
    corrupt(bad)
    truncated = replica / "ltx" / "1" / "0000000000000001-0000000000000003.ltx"
    truncated.write_bytes(truncated.read_bytes()[:150])
    assert main(["verify", str(replica)]) == 1
    lines = capsys.readouterr().out.splitlines()
    summary = lines.index("verified 4 files: 2 ok, 2 bad")
    by_file = {line.split(": ")[0].removeprefix("BAD "): line for line in lines[:summary]}
    assert set(by_file) == {str(bad), str(truncated)}
    # The latest TXID's chain runs through the truncated level-1 file: the replica does not restore.
    chain, closing = lines[summary + 1:]
    assert chain.startswith(f"BAD {truncated}: latest TXID does not restore: page index length ")
    assert closing == "checked 1 restore chain: 1 broken"
    assert "file checksum mismatch" in by_file[str(bad)]
    assert "truncated" in by_file[str(truncated)]


def test_verify_reports_a_symlinked_file_and_does_not_follow_a_symlinked_level(
    replica: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    elsewhere = tmp_path / "elsewhere"
    write(elsewhere / "0000000000000006-0000000000000006.ltx", 6, 6, [1], 5)
    link = replica / "ltx" / "0" / "0000000000000006-0000000000000006.ltx"
    link.symlink_to(elsewhere / "0000000000000006-0000000000000006.ltx")
    (replica / "ltx" / "2").symlink_to(elsewhere, target_is_directory=True)
    assert main(["verify", str(replica)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        f"BAD {link}: corrupt at byte 0: is a symbolic link; refusing to follow it",
        "verified 5 files: 4 ok, 1 bad",
        # The chain never uses the link (a replica listing does not follow it).
        "checked 1 restore chain: 0 broken",
    ]


def test_verify_of_a_missing_path_is_a_one_line_error(replica: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = replica / "nope"
    assert main(["verify", str(replica), str(missing)]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"ltxpool: error: {missing}: no such file or directory\n"
    assert captured.out == ""


def test_verify_verbose_lists_good_files(replica: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", "-v", str(replica / "ltx" / "0")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[:-1]] == ["ok", "ok"]


def test_dump_prints_header_pages_and_trailer(replica: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = replica / "ltx" / "0" / "0000000000000004-0000000000000004.ltx"
    assert main(["dump", str(path)]) == 0
    out = capsys.readouterr().out
    assert "flags:              0x00000002 (no-checksum)" in out
    assert "page size:          1024" in out
    assert "min TXID:           0000000000000004 (4)" in out
    assert "timestamp:          2023-11-14T22:13:20.000Z (1700000000000)" in out
    frames = list(Decoder(io.BytesIO(path.read_bytes())).frames())
    for frame in frames:
        assert f"{frame.pgno:>10} {frame.offset:>12} {frame.size:>10} {frame.payload_size:>10}" in out
    assert out.rstrip().endswith("verified:            yes")


def test_dump_json_is_one_object_that_agrees_with_the_decoder(replica: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = replica / "ltx" / "1" / "0000000000000001-0000000000000003.ltx"
    assert main(["dump", "--json", str(path)]) == 0
    report = json.loads(capsys.readouterr().out)
    decoder = Decoder(io.BytesIO(path.read_bytes()))
    frames = list(decoder.frames())
    assert report["header"]["min_txid"] == "0000000000000001" and report["header"]["snapshot"] is True
    assert report["header"]["page_size"] == PAGE and report["header"]["commit"] == 4
    assert [(p["pgno"], p["offset"], p["size"], p["compressed_size"]) for p in report["pages"]] == [
        (f.pgno, f.offset, f.size, f.payload_size) for f in frames
    ]
    assert decoder.trailer is not None
    assert report["trailer"] == {
        "post_apply_checksum": f"{decoder.trailer.post_apply_checksum:016x}",
        "file_checksum": f"{decoder.trailer.file_checksum:016x}",
    }
    assert report["verified"] is True and report["error"] is None


def test_dump_of_a_corrupt_file_shows_what_it_read_and_the_fault(replica: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = replica / "ltx" / "9" / "0000000000000001-0000000000000002.ltx"
    corrupt(path)
    assert main(["dump", "--json", str(path)]) == 1
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["verified"] is False and "file checksum mismatch" in report["error"]
    assert [p["pgno"] for p in report["pages"]] == [1, 2, 3]
    assert captured.err.startswith(f"ltxpool: error: {path}: corrupt at byte")


def test_the_console_script_runs_verify_and_dump(replica: Path) -> None:
    done = run_ltxpool("verify", str(replica))
    assert (done.returncode, done.stdout) == (0, "verified 4 files: 4 ok, 0 bad\nchecked 1 restore chain: 0 broken\n")
    path = replica / "ltx" / "0" / "0000000000000003-0000000000000003.ltx"
    dumped = run_ltxpool("dump", "--json", str(path))
    assert dumped.returncode == 0 and json.loads(dumped.stdout)["pages"][0]["pgno"] == 4
