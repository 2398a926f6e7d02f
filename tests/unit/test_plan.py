"""Planning: compaction inputs and restore chains stop at gaps and say where."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable

import pytest

from ltxpool.replica.errors import RestorePlanError
from ltxpool.replica.layout import LtxFile, format_name
from ltxpool.replica.plan import (
    coverage_gaps,
    level_problems,
    plan_compaction,
    plan_restore,
)
from tests.support.plans import level_zero_run, quadratic_chains, spans, state


def test_compaction_takes_the_contiguous_run_after_the_newest_file_of_the_target_level() -> None:
    plan = plan_compaction(state(l0=[(1, 1), (2, 2), (3, 3), (4, 5), (6, 6)], l1=[(1, 2)]), 1)
    assert spans(plan.inputs) == [(0, 3, 3), (0, 4, 5), (0, 6, 6)]
    assert plan.problems == []


def test_compaction_stops_at_a_gap_and_reports_it() -> None:
    plan = plan_compaction(state(l0=[(1, 1), (2, 2), (3, 3), (5, 5)]), 1)
    assert spans(plan.inputs) == [(0, 2, 2), (0, 3, 3)]
    assert plan.problems == ["gap after TXID 3 at level 0 (next file 0000000000000005-0000000000000005.ltx)"]


def test_compaction_refuses_to_start_past_a_gap_after_the_target_level() -> None:
    plan = plan_compaction(state(l1=[(1, 3)], l2=[(1, 3)], l0=[]), 2)
    assert plan.inputs == []
    plan = plan_compaction(state(l0=[(5, 5)], l1=[(1, 3)]), 1)
    assert plan.inputs == [] and plan.problems == ["gap after TXID 3 at level 0 (next file 0000000000000005-0000000000000005.ltx)"]


def test_compaction_reports_a_file_that_overlaps_what_is_already_compacted() -> None:
    plan = plan_compaction(state(l0=[(2, 4)], l1=[(1, 3)]), 1)
    assert plan.inputs == [] and plan.problems[0].startswith("overlap at level 0")


def test_nothing_new_is_an_empty_plan_not_an_error() -> None:
    plan = plan_compaction(state(l0=[(1, 1)], l1=[(1, 1)]), 1)
    assert plan.inputs == [] and plan.problems == []


def test_restore_uses_the_latest_snapshot_then_the_highest_levels() -> None:
    listings = state(l9=[(1, 4), (1, 8)], l3=[(1, 6)], l2=[(9, 12)], l1=[(9, 10), (11, 12), (13, 14)],
                     l0=[(t, t) for t in range(1, 16)])
    assert spans(plan_restore(listings).inputs) == [(9, 1, 8), (2, 9, 12), (1, 13, 14), (0, 15, 15)]
    assert spans(plan_restore(listings, 10).inputs) == [(9, 1, 8), (1, 9, 10)]
    assert spans(plan_restore(listings, 5).inputs) == [(9, 1, 4), (0, 5, 5)]


def test_restore_finds_a_chain_when_the_newest_snapshot_leads_nowhere() -> None:
    listings = state(l9=[(1, 10)], l3=[(1, 4), (5, 15)])
    assert spans(plan_restore(listings).inputs) == [(3, 1, 4), (3, 5, 15)]


def test_restore_to_an_unreachable_txid_names_the_gap() -> None:
    listings = state(l0=[(1, 1), (2, 2), (4, 4)])
    with pytest.raises(RestorePlanError) as caught:
        plan_restore(listings, 4)
    assert "TXID 4 is not reachable: gap after TXID 2" in str(caught.value)
    plan = plan_restore(listings)
    assert spans(plan.inputs) == [(0, 1, 1), (0, 2, 2)]
    assert plan.problems == [
        "TXID 4 is not reachable: gap after TXID 2: TXIDs 3-3 are in no file, between "
        "0/0000000000000002-0000000000000002.ltx and 0/0000000000000004-0000000000000004.ltx"
    ]
    assert plan.unreachable == plan.problems[0]


def test_restore_of_an_empty_replica_says_there_is_nothing() -> None:
    with pytest.raises(RestorePlanError, match="nothing to restore"):
        plan_restore(state())


def test_level_problems_tell_gaps_from_overlaps() -> None:
    listings = state(l1=[(1, 3), (3, 5), (8, 9)])
    assert level_problems(listings[1]) == [
        "overlap at level 1: 0000000000000001-0000000000000003.ltx and 0000000000000003-0000000000000005.ltx",
        "gap after TXID 5 at level 1",
    ]


def test_coverage_gaps_are_ranges_no_level_holds() -> None:
    listings = state(l0=[(1, 1), (2, 2), (9, 9)], l1=[(1, 4)], l9=[(1, 2)])
    assert coverage_gaps(listings) == [(5, 8)]
    assert coverage_gaps(state(l0=[(3, 3)], l1=[(1, 2)])) == []


def test_a_backlog_larger_than_the_fan_in_is_compacted_over_several_rounds() -> None:
    listings = state(l0=[(t, t) for t in range(1, 11)])
    first = plan_compaction(listings, 1, max_inputs=4)
    assert spans(first.inputs) == [(0, t, t) for t in range(2, 6)]
    listings[1].files = [LtxFile(1, 2, 5, "/r/ltx/1/" + format_name(2, 5))]
    assert spans(plan_compaction(listings, 1, max_inputs=4).inputs) == [(0, t, t) for t in range(6, 10)]


def test_a_new_generation_snapshot_restarts_compaction_after_it_and_is_not_an_overlap() -> None:
    listings = state(l0=[(1, 1), (2, 2), (3, 3), (1, 4), (5, 5)], l1=[(2, 2)])
    assert spans(plan_compaction(listings, 1).inputs) == [(0, 5, 5)]
    assert level_problems(listings[0]) == []
    listings[1].files.append(LtxFile(1, 5, 5, "/r/ltx/1/" + format_name(5, 5)))
    listings[1].files.sort()
    assert plan_compaction(listings, 1).inputs == []
    assert spans(plan_restore(listings).inputs) == [(0, 1, 4), (1, 5, 5)]


def test_compaction_starts_after_the_level_9_snapshot_never_at_its_txid() -> None:
    listings = state(l9=[(1, 10)], l0=[(t, t) for t in range(11, 15)])
    assert spans(plan_compaction(listings, 1).inputs) == [(0, t, t) for t in range(11, 15)]
    listings = state(l9=[(1, 10)], l1=[(11, 12), (13, 14)], l2=[(11, 12)], l0=[])
    assert spans(plan_compaction(listings, 2).inputs) == [(1, 13, 14)]
    assert plan_compaction(listings, 2).problems == []


def test_control_the_planner_before_14_starts_levels_1_to_3_at_the_snapshot() -> None:
    listings = state(l0=[(1, 1), (2, 2), (3, 3)])
    assert spans(plan_compaction(listings, 1, after_snapshot=False).inputs) == [(0, 1, 1), (0, 2, 2), (0, 3, 3)]
    assert spans(plan_compaction(listings, 1).inputs) == [(0, 2, 2), (0, 3, 3)]


def test_the_old_layout_converges_level_1_to_3_files_from_txid_1_are_passed_by_a_new_snapshot() -> None:
    listings = state(l0=[(t, t) for t in range(1, 16)], l1=[(1, 10)], l2=[(1, 8)], l9=[(1, 12)])
    assert spans(plan_compaction(listings, 1).inputs) == [(0, t, t) for t in range(13, 16)]
    assert plan_compaction(listings, 2).inputs == []  # level 1 holds nothing after the snapshot yet


def test_a_file_below_that_straddles_the_snapshot_is_taken_whole_not_left_to_stop_the_level() -> None:
    listings = state(l9=[(1, 12)], l1=[(1, 10), (11, 15), (16, 20)], l2=[(1, 10)], l0=[])
    assert spans(plan_compaction(listings, 2).inputs) == [(1, 11, 15), (1, 16, 20)]
    overlapping = state(l9=[(1, 12)], l1=[(9, 15)], l2=[(1, 10)], l0=[])
    assert plan_compaction(overlapping, 2).problems[0].startswith("overlap at level 1")


def test_restore_beyond_the_latest_txid_says_so_and_names_the_latest_file() -> None:
    listings = state(l0=[(1, 1), (2, 2)])
    with pytest.raises(RestorePlanError) as caught:
        plan_restore(listings, 9)
    assert caught.value.reason == "TXID 9 is beyond the latest TXID 2 (0/0000000000000002-0000000000000002.ltx)"
    plan = plan_restore(listings, 9, allow_gap=True)
    assert spans(plan.inputs) == [(0, 1, 1), (0, 2, 2)] and plan.unreachable == caught.value.reason


def test_an_unreachable_txid_is_refused_unless_a_gap_is_allowed_then_the_plan_stops_below_it() -> None:
    listings = state(l0=[(1, 1), (2, 2), (5, 5), (6, 6)])
    with pytest.raises(RestorePlanError) as caught:
        plan_restore(listings, 6)
    assert caught.value.reason == (
        "TXID 6 is not reachable: gap after TXID 2: TXIDs 3-4 are in no file, between "
        "0/0000000000000002-0000000000000002.ltx and 0/0000000000000005-0000000000000005.ltx"
    )
    assert caught.value.path.endswith("0000000000000002-0000000000000002.ltx")
    plan = plan_restore(listings, 6, allow_gap=True)
    assert spans(plan.inputs) == [(0, 1, 1), (0, 2, 2)] and plan.unreachable == caught.value.reason
    assert plan_restore(listings, 2).unreachable is None


def test_restore_planning_memory_is_linear_in_the_files_where_the_old_planner_was_quadratic() -> None:
    def peak(run: Callable[[], object]) -> int:
        tracemalloc.start()
        try:
            run()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    small = level_zero_run(3_000)
    # Control: the planner before #13, on the same listing, in the same run.
    old, new = peak(lambda: quadratic_chains(small)), peak(lambda: plan_restore(small))
    assert old > 20 * new, (old, new)
    assert old > 30 << 20
    large = level_zero_run(50_000)
    plan = None

    def plan_large() -> None:
        nonlocal plan
        plan = plan_restore(large)

    assert peak(plan_large) < 16 << 20
    assert plan is not None and len(plan.inputs) == 50_000 and plan.max_txid == 50_000
    assert peak(lambda: plan_compaction(large, 1)) < 1 << 20
