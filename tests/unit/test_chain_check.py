"""``verify`` and ``status`` judge a replica by whether its TXIDs restore, not file by file.

Each case is a replica whose every file verifies on its own (the file-level check is
the control: it passes them all), but whose latest TXID cannot be restored.
"""

from __future__ import annotations

import os
import random
from array import array
from pathlib import Path

import pytest

from ltxpool.cli import main
from ltxpool.errors import LtxpoolError
from ltxpool.ltx import HEADER_FLAG_NO_CHECKSUM, Encoder, Header, verify_file
from ltxpool.replica import Replica
from ltxpool.replica.chain_check import (
    _missing_pages,
    check_replica,
    checked_inputs,
    name_problems,
    trusted_newest,
    without_misnamed,
)
from ltxpool.replica.layout import LtxFile
from ltxpool.replica.plan import Plan
from ltxpool.replica.restore import restore
from ltxpool.replica.status import replica_status

PAGE = 1024


def write(root: Path, level: int, min_txid: int, max_txid: int, pgnos: list[int], commit: int,
          *, page_size: int = PAGE, name: str | None = None) -> Path:
    path = root / "ltx" / str(level) / (name or f"{min_txid:016x}-{max_txid:016x}.ltx")
    path.parent.mkdir(parents=True, exist_ok=True)
    header = Header(flags=HEADER_FLAG_NO_CHECKSUM, page_size=page_size, commit=commit, min_txid=min_txid,
                    max_txid=max_txid, timestamp=1_700_000_000_000)
    with open(path, "wb") as out:
        encoder = Encoder(out, header)
        for pgno in pgnos:
            encoder.write_page(pgno, bytes([pgno % 251]) * (page_size // 2) + os.urandom(page_size // 2))
        encoder.finish()
    return path


def every_file_verifies(root: Path) -> bool:
    return all(verify_file(p) is not None for p in sorted((root / "ltx").rglob("*.ltx")))


def restores(root: Path, out: Path) -> bool:
    try:
        restore(Replica(root), out, check_integrity=False)
    except LtxpoolError:
        return False
    return True


BROKEN = {
    # TXID 2 says the database grew to 6 pages but carries only page 5: page 6 is nowhere.
    "growth without its pages": [(0, 1, 1, [1, 2, 3, 4], 4), (0, 2, 2, [5], 6)],
    # TXID 2 shrinks to 2 pages, TXID 3 grows back to 4 writing only page 3: page 4 would
    # come from before the shrink.
    "growth after a shrink": [(0, 1, 1, [1, 2, 3, 4], 4), (0, 2, 2, [1], 2), (0, 3, 3, [3], 4)],
    "gap": [(0, 1, 1, [1, 2], 2), (0, 3, 3, [1], 2)],
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_verify_and_status_reject_a_latest_txid_that_does_not_restore(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "replica"
    for level, low, high, pgnos, commit in BROKEN[case]:
        write(root, level, low, high, pgnos, commit)
    assert every_file_verifies(root), "control: each file is fine on its own"
    problems = check_replica(Replica(root))
    assert len(problems) == 1, problems
    assert main(["verify", str(root)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[-2] == f"BAD {problems[0]}" and out[-1] == "checked 1 restore chain: 1 broken"
    status = replica_status(Replica(root), 0.0)
    assert status.restore_problems == [str(problems[0])]


def test_growth_without_pages_names_the_first_missing_page(tmp_path: Path) -> None:
    root = tmp_path / "replica"
    for level, low, high, pgnos, commit in BROKEN["growth without its pages"]:
        write(root, level, low, high, pgnos, commit)
    (problem,) = check_replica(Replica(root))
    assert problem.reason == "1 of 6 pages are in no file of the chain (first: page 6)"
    assert not restores(root, tmp_path / "out.db"), "restore refuses it too"


def test_a_shrink_cuts_off_the_pages_above_it_and_restore_refuses_to_bring_them_back(tmp_path: Path) -> None:
    root = tmp_path / "replica"
    for level, low, high, pgnos, commit in BROKEN["growth after a shrink"]:
        write(root, level, low, high, pgnos, commit)
    (problem,) = check_replica(Replica(root))
    assert "first: page 4" in problem.reason
    # A newest-wins merge alone would hand back page 4 from TXID 1 and call it a restore.
    with pytest.raises(LtxpoolError, match="latest TXID does not restore: 1 of 4 pages"):
        restore(Replica(root), tmp_path / "out.db", check_integrity=False)
    assert not (tmp_path / "out.db").exists()


def test_a_page_size_change_inside_a_chain_is_reported(tmp_path: Path) -> None:
    root = tmp_path / "replica"
    write(root, 0, 1, 1, [1, 2], 2)
    write(root, 0, 2, 2, [1, 2], 2, page_size=2 * PAGE)
    (problem,) = check_replica(Replica(root))
    assert problem.reason == f"page size {2 * PAGE} after {PAGE} within one restore chain"


def test_a_name_that_disagrees_with_its_header_is_not_trusted(tmp_path: Path) -> None:
    root = tmp_path / "replica"
    write(root, 0, 1, 1, [1, 2], 2)
    write(root, 0, 2, 2, [1], 2, name=f"{2:016x}-{0xff:016x}.ltx")
    (problem,) = check_replica(Replica(root))
    assert "file name says 2-255" in problem.reason


def test_a_complete_replica_passes_at_every_txid_with_all(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "replica"
    write(root, 0, 1, 1, [1, 2, 3, 4], 4)
    write(root, 0, 2, 2, [1], 2)
    write(root, 0, 3, 3, [3, 4], 4)
    write(root, 1, 1, 3, [1, 2, 3, 4], 4)
    assert check_replica(Replica(root), every_txid=True) == []
    assert main(["verify", "--all", str(root)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "checked 3 restore chains: 0 broken"


def test_all_finds_a_broken_earlier_txid_that_the_latest_does_not_use(tmp_path: Path) -> None:
    root = tmp_path / "replica"
    write(root, 0, 1, 1, [1, 2], 2)
    write(root, 0, 2, 2, [3], 4)  # TXID 2 misses page 4
    write(root, 9, 1, 3, [1, 2, 3, 4], 4)  # a snapshot covers TXID 3 completely
    assert check_replica(Replica(root)) == []
    problems = check_replica(Replica(root), every_txid=True)
    assert [p.txid for p in problems] == [2]


def _forward_bitmap(held: list[tuple[int, list[int]]], skip: int) -> tuple[int, int] | None:
    """The chain check before #13, one byte per page of each header's commit: (missing, first) or None."""
    present = bytearray()
    for commit, pgnos in held:
        if len(present) > commit:
            del present[commit:]
        else:
            present.extend(bytes(commit - len(present)))
        for pgno in pgnos:
            present[pgno - 1] = 1
    if skip <= len(present):
        present[skip - 1] = 1
    first = present.find(0)
    return None if first < 0 else (present.count(0), first + 1)


def test_the_bitmap_sized_by_held_pages_judges_every_chain_as_the_commit_sized_one_did() -> None:
    rng = random.Random(13)
    plan = Plan(inputs=[LtxFile(0, 1, 1, "/r/ltx/0/x.ltx")])
    for _ in range(3000):
        held = []
        for _ in range(rng.randrange(1, 5)):
            commit = rng.randrange(1, 40)
            held.append((commit, sorted(rng.sample(range(1, commit + 1), rng.randrange(0, commit + 1)))))
        skip = rng.choice([7, 100])
        expected = _forward_bitmap(held, skip)
        problem = _missing_pages(plan, None, [(c, array("I", p)) for c, p in held], skip)
        if expected is None:
            assert problem is None, held
            continue
        assert problem is not None, held
        count, first = expected
        assert problem.reason.endswith(f"(first: page {first})"), (held, problem.reason)
        exact = f"{count} of {held[-1][0]} pages"
        assert problem.reason.startswith(exact) or problem.reason.startswith("at least "), (held, problem.reason)
        if problem.reason.startswith("at least "):
            assert int(problem.reason.split()[2]) <= count


def test_names_that_headers_contradict_are_found_left_out_and_cut_from_plans(tmp_path: Path) -> None:
    write(tmp_path, 0, 1, 1, [1, 2], 2)
    write(tmp_path, 0, 2, 2, [1], 2)
    bad = write(tmp_path, 0, 3, 3, [2], 2, name=f"{3:016x}-{0xff:016x}.ltx")
    replica = Replica(tmp_path)
    listing = replica.list_level(0)
    problems = name_problems(listing.files)
    assert [str(p) for p in problems] == [f"{bad}: header holds TXIDs 3-3, the file name says 3-255"]
    newest, misnamed = trusted_newest(listing)
    assert newest is not None and newest.max_txid == 2 and misnamed == problems
    kept, left_out = without_misnamed(replica.list_all())
    assert [f.max_txid for f in kept[0].files] == [1, 2] and left_out == problems
    plan = checked_inputs(Plan(inputs=list(listing.files)))
    assert [f.max_txid for f in plan.inputs] == [1, 2]
    assert plan.problems == [f"{bad}: header holds TXIDs 3-3, the file name says 3-255: left out until quarantined"]
    # Control: a plan whose names all agree is returned as it is.
    whole = Plan(inputs=list(kept[0].files))
    assert checked_inputs(whole) is whole
