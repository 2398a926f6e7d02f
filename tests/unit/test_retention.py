"""Retention never removes the only copy of a TXID range, nor the way to the latest TXID."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ltxpool.replica.errors import RestorePlanError
from ltxpool.replica.layout import LEVELS, Listing, LtxFile, format_name
from ltxpool.replica.plan import plan_restore
from ltxpool.replica.retention import RetentionPolicy, plan_retention
from tests.support.plans import spans, state

NOW = 1_000_000.0
POLICY = RetentionPolicy(level_retention={0: 300, 1: 600, 2: 600, 3: 600}, snapshot_retention=3600)


def aged(listings: dict[int, Listing], age: float) -> dict[int, Listing]:
    for listing in listings.values():
        listing.files = [LtxFile(f.level, f.min_txid, f.max_txid, f.path, 1, NOW - age) for f in listing.files]
    return listings


def covered_txids(listings: dict[int, Listing]) -> set[int]:
    return {t for listing in listings.values() for f in listing.files for t in range(f.min_txid, f.max_txid + 1)}


def latest(listings: dict[int, Listing]) -> int:
    try:
        return plan_restore(listings).max_txid
    except RestorePlanError:
        return 0


def without(listings: dict[int, Listing], doomed: list[LtxFile]) -> dict[int, Listing]:
    gone = {f.path for f in doomed}
    return {level: Listing(level, [f for f in listing.files if f.path not in gone]) for level, listing in listings.items()}


def test_level0_files_go_once_level1_has_covered_them_long_enough() -> None:
    listings = aged(state(l0=[(1, 1), (2, 2), (3, 3)], l1=[(1, 2)]), 3600)
    assert spans(plan_retention(listings, POLICY, NOW)) == [(0, 1, 1), (0, 2, 2)]
    young = aged(state(l0=[(1, 1), (2, 2), (3, 3)], l1=[(1, 2)]), 10)
    assert plan_retention(young, POLICY, NOW) == []


def test_an_uncovered_file_stays_however_old() -> None:
    listings = aged(state(l0=[(1, 1), (2, 2), (3, 3)]), 10**6)
    assert plan_retention(listings, POLICY, NOW) == []


def test_old_snapshots_go_but_never_the_newest() -> None:
    listings = aged(state(l9=[(1, 5), (1, 9)]), 7200)
    assert spans(plan_retention(listings, POLICY, NOW)) == [(9, 1, 5)]
    only = aged(state(l9=[(1, 5)]), 10**6)
    assert plan_retention(only, POLICY, NOW) == []


def test_the_restore_chain_is_kept_even_where_a_union_of_ranges_covers_it() -> None:
    listings = aged(state(l9=[(1, 10)], l3=[(1, 4), (5, 15)], l2=[(11, 15)], l1=[(11, 13), (14, 15)]), 10**5)
    doomed = plan_retention(listings, POLICY, NOW)
    assert latest(without(listings, doomed)) == 15


ranges = st.lists(st.tuples(st.integers(1, 40), st.integers(0, 6)), max_size=12).map(
    lambda pairs: [(a, a + n) for a, n in pairs]
)


@settings(max_examples=400, deadline=None)
@given(
    levels=st.fixed_dictionaries({f"l{level}": ranges for level in LEVELS}),
    ages=st.lists(st.sampled_from([0, 100, 500, 1000, 5000]), min_size=64, max_size=64),
)
def test_retention_never_loses_a_range_the_latest_txid_or_a_levels_newest_file(levels, ages) -> None:
    levels["l9"] = [(1, b) for _, b in levels["l9"]]
    for key in levels:
        # One name, one file: a directory cannot hold two files of the same TXID range.
        levels[key] = sorted(set(levels[key]))
    listings = state(**levels)
    for index, listing in enumerate(listings.values()):
        listing.files = [
            LtxFile(f.level, f.min_txid, f.max_txid, f.path, 1, NOW - ages[(index * 13 + i) % 64])
            for i, f in enumerate(listing.files)
        ]
    doomed = plan_retention(listings, POLICY, NOW)
    after = without(listings, doomed)
    assert covered_txids(after) == covered_txids(listings)
    assert latest(after) == latest(listings)
    for level, listing in listings.items():
        if listing.files:
            newest = max(f.max_txid for f in listing.files)
            assert any(f.max_txid == newest for f in after[level].files)


def test_a_realistic_history_keeps_every_restorable_txid_within_retention() -> None:
    listings = {level: Listing(level) for level in LEVELS}

    def add(level: int, a: int, b: int, age: float) -> None:
        listings[level].files.append(LtxFile(level, a, b, f"/r/ltx/{level}/{format_name(a, b)}", 1, NOW - age))

    for t in range(1, 101):
        add(0, t, t, 10_000 - t * 90)
    for start in range(1, 101, 10):
        add(1, start, start + 9, 10_000 - (start + 9) * 90 + 30)
    for start in range(1, 101, 50):
        add(2, start, start + 49, 10_000 - (start + 49) * 90 + 60)
    add(9, 1, 50, 10_000 - 50 * 90 + 90)
    for listing in listings.values():
        listing.files.sort()
    doomed = plan_retention(listings, POLICY, NOW)
    after = without(listings, doomed)
    assert latest(after) == 100
    assert covered_txids(after) == covered_txids(listings)
    assert doomed, "this history is old enough that retention must remove something"
    assert all(f.level != 9 for f in doomed)


def _history(old_layout: bool) -> dict[int, Listing]:
    """100 TXIDs: the first snapshot (level 9 now, level 0 before #14), level-0 changes,
    level 1 every 10, level 2 every 50 and a level-9 snapshot at TXID 50; level 1-3
    files start after the snapshot they follow (before #14: at TXID 1)."""
    listings = {level: Listing(level) for level in LEVELS}

    def add(level: int, a: int, b: int, age: float) -> None:
        listings[level].files.append(LtxFile(level, a, b, f"/r/ltx/{level}/{format_name(a, b)}", 1, NOW - age))

    add(0 if old_layout else 9, 1, 1, 10_000)
    for t in range(2, 101):
        add(0, t, t, 10_000 - t * 90)
    for start in range(1, 101, 10):
        add(1, 1 if old_layout and start == 1 else max(start, 2), start + 9, 10_000 - (start + 9) * 90 + 30)
    add(2, 1 if old_layout else 2, 50, 10_000 - 50 * 90 + 60)
    add(9, 1, 50, 10_000 - 50 * 90 + 90)
    add(2, 51, 100, 10_000 - 100 * 90 + 60)
    add(3, 51, 100, 10_000 - 100 * 90 + 90)
    for listing in listings.values():
        listing.files.sort()
    return listings


def test_with_the_snapshot_at_level_9_and_changes_at_levels_0_to_3_retention_keeps_every_chain_it_needs() -> None:
    listings = _history(old_layout=False)
    doomed = plan_retention(listings, POLICY, NOW)
    after = without(listings, doomed)
    assert latest(after) == 100 and covered_txids(after) == covered_txids(listings)
    assert spans(plan_restore(after, 50).inputs) == [(9, 1, 50)]
    assert (9, 1, 50) not in spans(doomed) and (9, 1, 1) in spans(doomed), "the newer snapshot covers the first"


def test_an_old_layout_history_loses_its_base_copies_once_a_level_9_snapshot_covers_them() -> None:
    listings = _history(old_layout=True)
    doomed = plan_retention(listings, POLICY, NOW)
    after = without(listings, doomed)
    assert latest(after) == 100 and covered_txids(after) == covered_txids(listings)
    assert {(0, 1, 1), (1, 1, 10), (2, 1, 50)} <= set(spans(doomed))
    assert not any(f.min_txid == 1 for level in (0, 1, 2, 3) for f in after[level].files)


@settings(max_examples=300, deadline=None)
@given(
    levels=st.fixed_dictionaries({f"l{level}": ranges for level in LEVELS}),
    ages=st.lists(st.sampled_from([0, 100, 299, 300, 301, 599, 600, 3599, 3600, 5000]), min_size=64, max_size=64),
    later=st.floats(0.0, 1.0),
)
def test_the_plan_stays_as_it_is_until_retention_due_says(levels, ages, later) -> None:
    """The janitor leaves an unchanged replica alone until ``retention_due``: nothing may become removable before."""
    from ltxpool.replica.retention import retention_due

    levels["l9"] = [(1, b) for _, b in levels["l9"]]
    for key in levels:
        levels[key] = sorted(set(levels[key]))
    listings = state(**levels)
    for index, listing in enumerate(listings.values()):
        listing.files = [LtxFile(f.level, f.min_txid, f.max_txid, f.path, 1, NOW - ages[(index * 13 + i) % 64])
                         for i, f in enumerate(listing.files)]
    due = retention_due(listings, POLICY, NOW)
    assert due >= NOW
    before = spans(plan_retention(listings, POLICY, NOW))
    if due == float("inf"):
        assert spans(plan_retention(listings, POLICY, NOW + 10**7)) == before
    else:
        # Anywhere in [NOW, due) the plan is the one of NOW.
        assert spans(plan_retention(listings, POLICY, NOW + (due - NOW) * later * 0.999)) == before


def test_retention_due_is_when_a_covered_file_first_becomes_removable() -> None:
    from ltxpool.replica.retention import retention_due

    listings = aged(state(l0=[(1, 1), (2, 2), (3, 3)], l1=[(1, 2)]), 10)
    due = retention_due(listings, POLICY, NOW)
    assert due == NOW - 10 + 300
    assert plan_retention(listings, POLICY, due - 0.001) == []
    assert spans(plan_retention(listings, POLICY, due)) == [(0, 1, 1), (0, 2, 2)]
    # Control: nothing ever covers a lone level 0 -- never due.
    assert retention_due(aged(state(l0=[(1, 1), (2, 2)]), 10), POLICY, NOW) == float("inf")
