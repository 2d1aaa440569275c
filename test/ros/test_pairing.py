"""Stamp pairing: closest stamps within the slop, newest pair only, drops counted, time jumps detected."""
from deer_ros.ros.pairing import GRIPPER, STATIC, StampPairer

MS = 1_000_000


def test_pairs_matching_stamps_and_stamps_the_pair_with_the_static_image():
    p = StampPairer(slop_ns=10 * MS)
    p.add(STATIC, 100 * MS, "s1", 1)
    assert p.take() is None  # no gripper image yet
    p.add(GRIPPER, 105 * MS, "g1", 2)
    pair = p.take()
    assert (pair.stamp_ns, pair.static, pair.gripper, pair.received_ns) == (100 * MS, "s1", "g1", 2)
    assert p.take() is None  # taken once only


def test_frames_outside_the_slop_do_not_pair():
    p = StampPairer(slop_ns=10 * MS)
    p.add(STATIC, 100 * MS, "s1", 0)
    p.add(GRIPPER, 150 * MS, "g1", 0)
    assert p.take() is None
    p.add(STATIC, 151 * MS, "s2", 0)
    assert p.take().static == "s2"


def test_only_the_newest_pair_is_kept_and_replaced_pairs_are_counted():
    p = StampPairer(slop_ns=5 * MS)
    for i in range(4):
        p.add(STATIC, i * 33 * MS, f"s{i}", 0)
        p.add(GRIPPER, i * 33 * MS + MS, f"g{i}", 0)
    pair = p.take()
    assert (pair.static, pair.gripper) == ("s3", "g3")
    assert (p.stats.pairs, p.stats.dropped) == (4, 3)


def test_stamps_going_back_clear_the_buffers_and_report_a_jump():
    p = StampPairer(slop_ns=5 * MS)
    p.add(STATIC, 10_000 * MS, "old", 0)
    assert p.add(GRIPPER, 10 * MS, "new_g", 0) is True  # a simulator reset
    assert p.stats.time_jumps == 1
    p.add(STATIC, 11 * MS, "new_s", 0)
    pair = p.take()
    assert (pair.static, pair.gripper) == ("new_s", "new_g")
