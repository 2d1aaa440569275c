"""`python -m deer_ros.bench.budget`: it measures the model it is given, never silently a random one."""
from __future__ import annotations

import pytest

from deer_ros.bench.budget import main


def test_a_missing_checkpoint_is_an_error_not_a_random_model(tmp_path, capsys):
    assert main(["--checkpoint", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert f"checkpoint {tmp_path / 'nowhere'} does not exist" in err
    assert not (tmp_path / "out").exists()  # nothing was measured


def test_random_weights_and_a_checkpoint_are_refused_together(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--random-weights", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "out")])
    assert exc.value.code == 2 and "not both" in capsys.readouterr().err
