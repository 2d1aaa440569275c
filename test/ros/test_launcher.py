"""How node executables and the ROS domain are found (deer_ros/ros/launcher.py)."""
import os
import stat
import sys
from pathlib import Path

import pytest

from deer_ros.ros.launcher import caller_domain, executable


def _script(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_a_colcon_install_on_ament_prefix_path_comes_first(tmp_path, monkeypatch):
    # colcon installs executables into <prefix>/lib/<package>/ (where `ros2 run` looks), not on PATH
    other = tmp_path / "other_ws"
    installed = _script(tmp_path / "install" / "lib" / "deer_ros" / "deer_policy_node")
    monkeypatch.setenv("AMENT_PREFIX_PATH", os.pathsep.join([str(other), str(tmp_path / "install")]))
    assert executable("deer_policy_node") == str(installed)


def test_next_to_the_interpreter_when_the_prefix_has_no_usable_file(tmp_path, monkeypatch):
    # a directory, or a file without the executable bit, under <prefix>/lib/deer_ros is not a node executable
    prefix = tmp_path / "install"
    (prefix / "lib" / "deer_ros" / "deer_policy_node").mkdir(parents=True)
    (prefix / "lib" / "deer_ros" / "calvin_bridge_node").write_text("not executable")
    venv_script = _script(tmp_path / "venv" / "bin" / "deer_policy_node")
    bridge_script = _script(tmp_path / "venv" / "bin" / "calvin_bridge_node")
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(prefix))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "venv" / "bin" / "python"))
    assert executable("deer_policy_node") == str(venv_script)
    assert executable("calvin_bridge_node") == str(bridge_script)


def test_path_is_the_last_resort(tmp_path, monkeypatch):
    on_path = _script(tmp_path / "bin" / "deer_policy_node")
    monkeypatch.delenv("AMENT_PREFIX_PATH", raising=False)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "elsewhere" / "python"))
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    assert executable("deer_policy_node") == str(on_path)


def test_a_missing_executable_names_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(tmp_path / "install"))
    with pytest.raises(FileNotFoundError) as err:
        executable("no_such_node_executable")
    assert str(tmp_path / "install" / "lib" / "deer_ros") in str(err.value)
    assert "colcon build" in str(err.value)


@pytest.mark.parametrize("value,domain", [("", None), ("0", 0), (" 42 ", 42), ("232", 232)])
def test_the_callers_domain_is_used_when_set(value, domain):
    env = {} if value == "" else {"ROS_DOMAIN_ID": value}
    assert caller_domain(env) == domain


@pytest.mark.parametrize("value", ["abc", "-1", "233", "1.5"])
def test_a_value_that_is_not_a_domain_is_refused_with_the_range(value):
    with pytest.raises(ValueError, match=r"ROS_DOMAIN_ID=.* 0\.\.232"):
        caller_domain({"ROS_DOMAIN_ID": value})
