"""`read_throughput`: the dataset read rate the bench reports is over the frames the replay bridge reads."""
from __future__ import annotations

from deer_ros.bench.timing import read_throughput
from deer_ros.calvin.dataset import CalvinSplit
from deer_ros.paths import calvin_sample


class CountingSplit(CalvinSplit):
    """The real split, noting which frames are read (and with which keys)."""

    def __init__(self, *args, **kwargs) -> None:
        self.read: list[tuple[int, tuple | None]] = []
        super().__init__(*args, **kwargs)
        self.read.clear()  # the checks of the constructor are not the measured read

    def frame(self, index, keys=None):
        self.read.append((index, None if keys is None else tuple(keys)))
        return super().frame(index, keys)


def test_reads_every_episode_frame_once_in_order_with_the_bridges_keys():
    split = CountingSplit(calvin_sample() / "validation")
    result = read_throughput(split)
    expected = [i for start, end in split.episodes for i in range(start, end + 1)]
    assert [i for i, _ in split.read] == expected and result["frames"] == len(expected) == len(split)
    assert {keys for _, keys in split.read} == {()}  # cameras and rel_actions only, as the bridge reads them


def test_max_frames_stops_the_read_early():
    split = CountingSplit(calvin_sample() / "validation")
    assert read_throughput(split, max_frames=7)["frames"] == 7
    assert [i for i, _ in split.read] == [i for start, end in split.episodes for i in range(start, end + 1)][:7]
