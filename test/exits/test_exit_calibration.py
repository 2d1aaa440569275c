"""Calibration files: round trip, validation on load with clear errors, fitting to a model's exits."""
import json

import numpy as np
import pytest

from deer_ros.exits.calibration import Calibration, CalibrationError, file_sha256
from deer_ros.model.fingerprint import checkpoint_fingerprint
from exits_helpers import GFLOPS_3B, LAYERS_3B, synthetic_values


def make(n=50, **meta):
    rng = np.random.default_rng(0)
    return Calibration({"action_consistency": synthetic_values(rng, 6, n), "action_cosine": rng.random((6, n))},
                       GFLOPS_3B, LAYERS_3B, np.repeat([0, 1], n // 2), {"model": "tiny", **meta})


def test_round_trip_keeps_every_array_and_the_metadata(tmp_path):
    cal = make(checkpoint="/x.pt", checkpoint_sha256="ab" * 32, dataset="/d", split="training")
    loaded = Calibration.load(cal.save(tmp_path / "sub" / "cal.npz"))
    assert loaded.criteria == ("action_consistency", "action_cosine")
    for name in cal.criteria:
        np.testing.assert_array_equal(loaded.values[name], cal.values[name])
    np.testing.assert_array_equal(loaded.exit_gflops, GFLOPS_3B)
    np.testing.assert_array_equal(loaded.exit_layers, LAYERS_3B)
    np.testing.assert_array_equal(loaded.segment, cal.segment)
    assert loaded.meta["checkpoint_sha256"] == "ab" * 32 and loaded.meta["format"] == "deer_ros.calibration/1"


def rewrite(path, **changes):
    """Re-save the arrays of `path` with some entries replaced (None = removed)."""
    with np.load(path) as npz:
        data = {k: npz[k] for k in npz.files}
    for k, v in changes.items():
        if v is None:
            data.pop(k)
        else:
            data[k] = v
    np.savez(path, **data)
    return path


@pytest.mark.parametrize("changes, message", [
    ({"meta": None}, "not a deer_ros calibration file"),
    ({"meta": np.array("{not json")}, "'meta' is not valid JSON"),
    ({"meta": np.array(json.dumps({"format": "other/9"}))}, "format 'other/9'"),
    ({"segment": None}, r"missing arrays \['segment'\]"),
    ({"values__action_consistency": np.full((6, 50), np.nan)}, "NaN, Inf or negative"),
    ({"values__action_consistency": np.ones((5, 50))}, r"shape \(5, 50\), expected \(6, 50\)"),
    ({"values__telepathy": np.ones((6, 50))}, "unknown criterion 'telepathy'"),
    ({"exit_gflops": GFLOPS_3B[::-1].copy()}, "positive and increasing"),
    ({"exit_layers": np.ones(6, dtype=np.int64)}, "exit_layers must be >= 1 and increasing"),
])
def test_broken_files_are_refused_with_what_is_wrong(tmp_path, changes, message):
    path = rewrite(make().save(tmp_path / "cal.npz"), **changes)
    with pytest.raises(CalibrationError, match=message) as info:
        Calibration.load(path)
    assert str(path) in str(info.value)


def test_missing_and_non_npz_files(tmp_path):
    with pytest.raises(CalibrationError, match="not found; create one with `deer-ros calibrate`"):
        Calibration.load(tmp_path / "nope.npz")
    junk = tmp_path / "junk.npz"
    junk.write_text("hello")
    with pytest.raises(CalibrationError, match="not a readable .npz"):
        Calibration.load(junk)
    with pytest.raises(CalibrationError, match="ending in .npz"):
        make().save(tmp_path / "cal.json")


def test_criterion_values_name_what_the_file_holds():
    cal = make()
    assert cal.criterion_values("action_cosine").shape == (6, 50)
    with pytest.raises(CalibrationError, match="no values for criterion 'feature_cosine'.*--criterion"):
        cal.criterion_values("feature_cosine")
    with pytest.raises(ValueError, match="unknown exit criterion"):
        cal.criterion_values("telepathy")


def test_for_exits_accepts_a_prefix_and_refuses_another_model():
    cal = make()
    cut = cal.for_exits([2, 4, 6])
    assert cut.n_exits == 3 and cut.values["action_consistency"].shape == (3, 50)
    np.testing.assert_array_equal(cut.values["action_consistency"], cal.values["action_consistency"][:3])
    assert cal.for_exits(LAYERS_3B) is cal
    with pytest.raises(CalibrationError, match="do not match the model's exits"):
        cal.for_exits([1, 2, 3])
    with pytest.raises(CalibrationError, match="do not match"):
        cal.for_exits(list(LAYERS_3B) + [14])


def test_file_sha256(tmp_path):
    f = tmp_path / "ckpt.bin"
    f.write_bytes(b"abc")
    assert file_sha256(f) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_checkpoint_mismatch_compares_the_recorded_fingerprint(tmp_path):
    ckpt = tmp_path / "a.pt"
    ckpt.write_bytes(bytes(range(256)) * 4096)  # 1 MiB: the fingerprint samples it
    cal = make(checkpoint=str(ckpt), checkpoint_fingerprint=checkpoint_fingerprint(ckpt))
    assert cal.checkpoint_mismatch(ckpt) is None
    data = bytearray(ckpt.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte in the middle, where the 9th of 17 samples lies
    ckpt.write_bytes(bytes(data))
    assert "re-run `deer-ros calibrate`" in cal.checkpoint_mismatch(ckpt)
    ckpt.write_bytes(b"a smaller retrained file")
    assert "re-run `deer-ros calibrate`" in cal.checkpoint_mismatch(ckpt)
    assert make().checkpoint_mismatch(ckpt) is None  # nothing recorded: nothing to compare
