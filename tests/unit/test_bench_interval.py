"""The interval the folder_sync bench prints for the median of its rounds, and its verdict on goal 2
(bench/folder_sync.py)."""

from __future__ import annotations

import statistics

from bench.folder_sync import ROUNDS_FOR_GOAL_2, goal_2_verdict, median_interval


def test_equal_rounds_give_a_point() -> None:
    assert median_interval([1.04] * 9) == (1.04, 1.04)


def test_the_interval_holds_the_median_and_narrows_with_more_rounds() -> None:
    rounds = [1.214, 0.892, 1.006, 1.091, 1.230, 1.063, 1.024, 1.160, 1.152, 1.134, 0.994]
    low, high = median_interval(rounds)
    assert low < statistics.median(rounds) < high
    assert min(rounds) <= low
    assert high <= max(rounds)
    more_low, more_high = median_interval(rounds * 4)  # the same spread, four times the rounds
    assert more_high - more_low < high - low


def test_it_is_reproducible() -> None:
    rounds = [0.984, 1.001, 1.154, 1.100, 1.032, 1.030, 1.073]
    assert median_interval(rounds) == median_interval(list(rounds))


def test_goal_2_gets_a_verdict_only_from_enough_rounds() -> None:
    assert goal_2_verdict(1.05, ROUNDS_FOR_GOAL_2) == "OK"
    assert goal_2_verdict(1.051, ROUNDS_FOR_GOAL_2) == "MISSED"
    for ratio in (0.9, 1.2):  # two rounds of 1.16x said MISSED before, of 0.9x would have said OK
        verdict = goal_2_verdict(ratio, ROUNDS_FOR_GOAL_2 - 1)
        assert verdict.startswith(f"NOT DECIDED by {ROUNDS_FOR_GOAL_2 - 1} rounds"), verdict
        assert f"--rsync-only --rounds {ROUNDS_FOR_GOAL_2}" in verdict
