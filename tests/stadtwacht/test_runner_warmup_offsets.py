"""Warm-up start offsets recorded with each commit: never below 0, whatever the commit (a CI crash seeked to -1)."""

from stadtwacht.runner import _Checkpoints, _parse_warm

HOUR = 3_600 * 10**9


def test_commit_at_offset_zero_gives_a_seekable_warm_start():
    # messages deferred from a partition's first offset commit 0; once the assignment sample ages out
    # of the horizon, the oldest sample is that commit's
    cp = _Checkpoints(horizon_ns=HOUR)
    tp = ("t.flood", 2)
    cp.add(tp, 0, 0)  # the assignment
    assert cp.committed(tp, 5 * HOUR, 0) == 0
    assert cp.committed(tp, 7 * HOUR, 0) == 0


def test_warm_start_is_the_oldest_sample_within_the_horizon():
    cp = _Checkpoints(horizon_ns=HOUR)
    tp = ("t.flood", 0)
    cp.add(tp, 0, 10)
    assert cp.committed(tp, HOUR // 2, 100) == 10  # the assignment sample is still within the hour
    assert cp.committed(tp, HOUR, 200) == 10
    assert cp.committed(tp, 2 * HOUR, 300) == 99  # the sample at half an hour (first offset 99) is oldest in reach
    assert cp.committed(tp, 2 * HOUR + 1, 50) == 50  # never past the offset being committed


def test_negative_or_malformed_warm_metadata_is_ignored():
    assert _parse_warm("warm=-1") is None  # written by releases before the fix
    assert _parse_warm("warm=x") is None
    assert _parse_warm("") is None
    assert _parse_warm("warm=42") == 42
