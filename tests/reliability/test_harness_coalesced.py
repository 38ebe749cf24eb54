"""The crash test's allowance for a partial view: only (resolved, firing) pairs may be missing."""

from tests.reliability.harness import coalesced_pairs

WANT = ["firing", "resolved", "firing", "resolved", "firing"]


def test_equal_sequences_miss_nothing():
    assert coalesced_pairs(WANT, WANT) == 0


def test_an_all_clear_held_back_until_the_danger_returned_is_one_pair():
    assert coalesced_pairs(["firing", "resolved", "firing"], WANT) == 1
    assert coalesced_pairs(["firing"], WANT) == 2


def test_anything_else_is_not_a_coalesced_sequence():
    assert coalesced_pairs(["firing", "resolved"], WANT) is None  # ends in another state
    assert coalesced_pairs(["firing", "firing", "firing"], WANT) is None  # a second firing without all-clear
    assert coalesced_pairs(["resolved", "firing", "resolved", "firing"], WANT) is None
    assert coalesced_pairs([*WANT, "resolved", "firing"], WANT) is None  # more events than transitions
