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


def test_both_cameras_going_back_clear_the_buffers_and_mark_the_first_new_pair():
    p = StampPairer(slop_ns=5 * MS)
    p.add(STATIC, 10_000 * MS, "s0", 0)
    p.add(GRIPPER, 10_000 * MS, "g0", 0)
    assert not p.take().after_jump
    p.add(STATIC, 10_033 * MS, "old", 0)
    assert p.add(GRIPPER, 10 * MS, "new_g", 0) is False  # one camera alone proves nothing
    assert p.add(STATIC, 11 * MS, "new_s", 0) is True  # both went back: a simulator reset
    assert p.stats.time_jumps == 1
    p.add(STATIC, 44 * MS, "s2", 0)
    p.add(GRIPPER, 44 * MS, "g2", 0)  # replaces the first pair after the jump before it was taken
    pair = p.take()
    assert (pair.static, pair.gripper, pair.after_jump) == ("s2", "g2", True)
    p.add(STATIC, 77 * MS, "s3", 0)
    p.add(GRIPPER, 77 * MS, "g3", 0)
    assert not p.take().after_jump


def _run(p: StampPairer, ticks, lag_frames: int = 0, stray: dict | None = None) -> list:
    """30 Hz ticks; the static camera runs `lag_frames` behind; `stray` maps a tick to a bogus static stamp."""
    pairs = []
    for k in ticks:
        p.add(GRIPPER, k * 33 * MS, f"g{k}", k)
        s = k - lag_frames
        p.add(STATIC, (stray or {}).get(k, s * 33 * MS), f"s{s}", k)
        pair = p.take()
        if pair is not None:
            pairs.append(pair)
    return pairs


def test_a_single_stray_stamp_pairs_with_nothing_and_is_no_time_jump():
    for bogus in (1_000_000 * MS, -1_000_000 * MS, 0):
        p = StampPairer(slop_ns=20 * MS)
        pairs = _run(p, range(100, 130), stray={110: 100 * 33 * MS + bogus if bogus else 0})
        assert p.stats.time_jumps == 0 and not any(pair.after_jump for pair in pairs)
        assert len(pairs) == 29  # every tick but the stray one


def test_a_camera_one_frame_behind_still_pairs_in_order_without_time_jumps():
    p = StampPairer(slop_ns=20 * MS)
    pairs = _run(p, range(100, 160), lag_frames=1)
    stamps = [pair.stamp_ns for pair in pairs]
    assert p.stats.time_jumps == 0 and len(pairs) == 59
    assert stamps == sorted(stamps) and all(pair.stamp_ns == pair.gripper_stamp_ns for pair in pairs)
