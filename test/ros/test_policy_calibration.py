"""The policy node says when its calibration was made for another checkpoint (log and /diagnostics), and acts."""
from __future__ import annotations

import json
import shutil

import pytest
from diagnostic_msgs.msg import DiagnosticStatus

from deer_ros.ros.client import diagnostic_values as kv

pytestmark = pytest.mark.ros


def _retrained_copy_of_the_demo_model(tmp_path):
    """The demo model folder with one weight changed and its fingerprint updated: another checkpoint."""
    from safetensors.torch import load_file, save_file

    from deer_ros.model.checkpoint.folder import WEIGHTS_FILE
    from deer_ros.model.fingerprint import file_sha256
    from deer_ros.paths import demo_checkpoint

    other = tmp_path / "retrained"
    shutil.copytree(demo_checkpoint(), other, ignore=shutil.ignore_patterns("calibration.npz"))
    weights = load_file(str(other / WEIGHTS_FILE))
    name = next(n for n, t in weights.items() if "head" in n and t.is_floating_point())
    weights[name] += 1e-3
    save_file(weights, str(other / WEIGHTS_FILE))
    config = json.loads((other / "config.json").read_text())
    config["weights_sha256"] = file_sha256(other / WEIGHTS_FILE)
    config.pop("calibration", None)  # a folder without a calibration of its own
    (other / "config.json").write_text(json.dumps(config))
    return other


@pytest.mark.parametrize("checkpoint", ["another", "its own"])
def test_a_calibration_for_another_checkpoint_is_reported_and_the_node_still_acts(launch_node, client, tmp_path,
                                                                                 checkpoint):
    from deer_ros.paths import demo_calibration, demo_checkpoint

    model = _retrained_copy_of_the_demo_model(tmp_path) if checkpoint == "another" else demo_checkpoint()
    proc = launch_node("deer_policy_node", params={"use_sim_time": True, "diagnostics_period_s": 0.2,
                                                   "checkpoint": str(model), "calibration": str(demo_calibration()),
                                                   "flops_budget": 0.004})
    policy = client
    policy.wait_for_policy()
    policy.instruct("open the drawer")
    assert policy.act(1.0).flops_budget == pytest.approx(0.004)  # the budget is solved and used either way
    if checkpoint == "another":
        status = policy.wait_status(DiagnosticStatus.WARN)
        assert "made for checkpoint" in kv(status)["calibration_warning"], kv(status)
        assert "made for checkpoint" in proc.output()
    else:
        status = policy.wait_status(DiagnosticStatus.OK)
        assert "calibration_warning" not in kv(status) and "made for checkpoint" not in proc.output()
