"""The replica layout: names parse strictly, odd entries are skipped and reported, nothing is followed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ltxpool.ltx import open_ltx
from ltxpool.ltx.errors import CorruptLTXError
from ltxpool.replica.layout import Replica, format_name, parse_name


def test_names_round_trip_and_malformed_names_do_not_parse() -> None:
    assert format_name(1, 0x1F) == "0000000000000001-000000000000001f.ltx"
    assert parse_name(format_name(7, 9)) == (7, 9)
    for bad in ["1-2.ltx", "0000000000000001-000000000000001F.ltx", "0000000000000002-0000000000000001.ltx",
                "0000000000000000-0000000000000001.ltx", "0000000000000001-0000000000000002.ltx.tmp", "x.ltx"]:
        assert parse_name(bad) is None, bad


def test_listing_sorts_by_txid_and_reports_what_it_skips(tmp_path: Path) -> None:
    replica = Replica(tmp_path)
    level = Path(replica.ensure_level_dir(1))
    for low, high in [(5, 8), (1, 4), (9, 9)]:
        (level / format_name(low, high)).write_bytes(b"x")
    (level / "garbage.ltx").write_bytes(b"x")
    (level / ".ltxpool.lock").write_bytes(b"")
    (level / (format_name(10, 10) + ".tmp")).write_bytes(b"x")
    outside = tmp_path / "outside.ltx"
    outside.write_bytes(b"secret")
    (level / format_name(11, 11)).symlink_to(outside)
    listing = replica.list_level(1)
    assert [(f.min_txid, f.max_txid) for f in listing.files] == [(1, 4), (5, 8), (9, 9)]
    assert sorted(os.path.basename(path) for path, _ in listing.skipped) == [format_name(11, 11), "garbage.ltx"]
    assert any("symlink" in reason for _, reason in listing.skipped)


def test_a_symlinked_level_directory_is_reported_not_followed(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / format_name(1, 1)).write_bytes(b"x")
    replica = Replica(tmp_path / "replica")
    os.makedirs(replica.ltx_dir)
    os.symlink(elsewhere, replica.level_dir(0))
    listing = replica.list_level(0)
    assert listing.files == []
    assert listing.skipped and "symlink" in listing.skipped[0][1]


def test_a_missing_level_is_an_empty_level(tmp_path: Path) -> None:
    assert Replica(tmp_path).list_level(3).files == []


def test_a_file_with_a_second_hard_link_is_not_trusted_as_replica_content(tmp_path: Path) -> None:
    """A second link is someone else's file under an LTX name (another replica's, a secret)."""
    other = Replica(tmp_path / "other")
    theirs = Path(other.ensure_level_dir(0)) / format_name(1, 1)
    theirs.write_bytes(b"another replica's snapshot")
    replica = Replica(tmp_path / "replica")
    planted = Path(replica.ensure_level_dir(0)) / format_name(1, 1)
    planted.hardlink_to(theirs)
    listing = replica.list_level(0)
    assert listing.files == [] and "2 hard links" in listing.skipped[0][1]
    with pytest.raises(CorruptLTXError, match="2 hard links"):
        with open_ltx(planted):
            pass
    # Control: with one link the same entry is listed.
    os.unlink(theirs)
    assert [f.name for f in replica.list_level(0).files] == [format_name(1, 1)]
