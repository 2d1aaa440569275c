"""The launch files and their arguments.

The arguments come from the nodes' parameter tables and are checked by deer_ros/ros/launch_args.py, which needs
no `launch` package: those checks run everywhere. Where launch and launch_ros are installed (a ROS 2 install, or
the sources as in docs/ros_tools.md), the launch files themselves are loaded too; test/launch/ runs them.
"""
import re
import tomllib
from pathlib import Path

import pytest
import yaml

from deer_ros.ros.launch_args import (LaunchArgumentError, bridge_launch, describe, node_parameters, parse,
                                      policy_launch, read_params_file)
from deer_ros.ros.params import ParamSpec

REPO = Path(__file__).resolve().parents[1]
LAUNCH_FILES = {p.name: p for p in sorted((REPO / "launch").glob("*.launch.py"))}
BOTH = ("calvin_bridge", "deer_policy")
NODES = {"calvin_demo.launch.py": BOTH, "calvin_sim.launch.py": BOTH, "robot.launch.py": ("deer_policy",)}
# Parameters a launch file sets itself instead of offering them (the simulator evaluation is sim mode, once).
FIXED = {"calvin_sim.launch.py": {"mode", "exit_when_done"}}


def _nodes():
    return {n.name: n for n in (policy_launch(), bridge_launch())}


def _spec(node, name: str) -> ParamSpec:
    return next(s for s in node.arguments() if s.name == name)


def test_both_launch_files_exist():
    assert set(LAUNCH_FILES) >= set(NODES)


@pytest.mark.parametrize("node_name", ["deer_policy", "calvin_bridge"])
def test_each_node_is_installed_and_its_params_file_sets_only_valid_declared_parameters(node_name):
    node = _nodes()[node_name]
    console_scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert node.executable in console_scripts, f"{node.executable} is not a console script in pyproject.toml"
    assert f"scripts/{node.executable}" in (REPO / "CMakeLists.txt").read_text(), "not installed by CMake"
    params = yaml.safe_load((REPO / "config" / node.params_file).read_text())["/**"]["ros__parameters"]
    specs = {s.name: s for s in node.parameters}
    assert set(params) <= set(specs), f"undeclared: {sorted(set(params) - set(specs))}"
    for key, value in params.items():
        assert specs[key].check(value) is None, specs[key].check(value)


@pytest.mark.parametrize("text,value", [("0.004", 0.004), ("2", 2.0), (" 6.5 ", 6.5)])
def test_a_number_argument_is_typed_for_the_node(text, value):
    parsed = parse(_spec(policy_launch(), "flops_budget"), text)
    assert parsed == value and isinstance(parsed, float)


@pytest.mark.parametrize("name,text,message", [
    ("flops_budget", "abc", "flops_budget:=abc is not a number; e.g. flops_budget:=0.5"),
    ("flops_budget", "nan", "flops_budget:=nan is not a number"),
    ("flops_budget", "-1", "flops_budget=-1.0 is out of range [0.0, 10000.0]"),
    ("max_exit", "2.5", "max_exit:=2.5 is not an integer"),
    ("autostart", "yes", "autostart:=yes is not a bool (true or false)"),
    ("dtype", "fp8", "dtype='fp8' is not one of fp32, fp16, bf16, int8"),
    ("thresholds", "0.1", "thresholds:=0.1 is not a list of numbers"),
])
def test_a_refused_argument_is_named_with_what_it_should_be(name, text, message):
    with pytest.raises(LaunchArgumentError, match=re.escape(message)):
        parse(_spec(policy_launch(), name), text)


def test_empty_arguments_leave_the_params_file_in_charge():
    node = policy_launch()
    given = {spec.name: "" for spec in node.arguments()} | {"max_exit": "2", "budget_tracking": "False"}
    assert node_parameters(node, given, REPO / "config" / node.params_file) == {"max_exit": 2,
                                                                                 "budget_tracking": False}


def test_a_bad_value_in_a_params_file_stops_the_launch_naming_the_file(tmp_path):
    params = tmp_path / "mine.yaml"
    params.write_text("/**:\n  ros__parameters:\n    max_exit: -3\n")
    with pytest.raises(LaunchArgumentError, match=f"params file {re.escape(str(params))}: max_exit=-3 is out of"):
        node_parameters(policy_launch(), {}, params)
    with pytest.raises(LaunchArgumentError, match="No such file"):
        node_parameters(policy_launch(), {}, tmp_path / "missing.yaml")


def test_a_params_file_section_for_the_node_name_counts(tmp_path):
    params = tmp_path / "mine.yaml"
    params.write_text("/**:\n  ros__parameters:\n    max_exit: 1\ndeer_policy:\n  ros__parameters:\n"
                      "    max_exit: 3\nother_node:\n  ros__parameters:\n    max_exit: 5\n")
    assert read_params_file(params, "deer_policy") == {"max_exit": 3}


def test_a_checkpoint_finds_the_calibration_beside_it(tmp_path):
    checkpoint = tmp_path / "deer_d.pt"
    checkpoint.write_bytes(b"")
    (tmp_path / "deer_d_calibration.npz").write_bytes(b"")
    given = {"checkpoint": str(checkpoint), "flops_budget": "6.0"}
    values = node_parameters(policy_launch(), given, REPO / "config" / "deer_policy.yaml")
    assert values["calibration"] == str(tmp_path / "deer_d_calibration.npz")


def test_a_budget_for_a_checkpoint_without_calibration_is_refused_with_the_command_that_makes_one(tmp_path):
    given = {"checkpoint": str(tmp_path / "deer_d.pt"), "flops_budget": "6.0", "model": "of3b"}
    with pytest.raises(LaunchArgumentError, match="deer-ros calibrate --model of3b --checkpoint"):
        node_parameters(policy_launch(), given, REPO / "config" / "deer_policy.yaml")
    # without a budget the same checkpoint starts: max_exit and thresholds need no calibration
    assert "calibration" not in node_parameters(policy_launch(), {**given, "flops_budget": "0"},
                                                REPO / "config" / "deer_policy.yaml")


def test_a_model_folder_with_a_budget_uses_its_own_calibration_and_one_without_is_refused(tmp_path):
    from deer_ros.paths import demo_checkpoint

    params = REPO / "config" / "deer_policy.yaml"
    values = node_parameters(policy_launch(), {"checkpoint": str(demo_checkpoint()), "flops_budget": "0.004"}, params)
    assert values["flops_budget"] == 0.004 and not values.get("calibration")  # the node reads the folder's own
    bare = tmp_path / "model"
    bare.mkdir()
    with pytest.raises(LaunchArgumentError, match="needs a calibration file"):
        node_parameters(policy_launch(), {"checkpoint": str(bare), "flops_budget": "0.004"}, params)


def test_descriptions_say_type_range_and_the_params_file_value():
    text = describe(_spec(policy_launch(), "flops_budget"), 0.0)
    assert "GFLOPs" in text and "Type: number, range [0.0, 10000.0]" in text and "(0.0)" in text
    assert "one of replay, sim" in describe(_spec(bridge_launch(), "mode"), "replay")


def test_the_demo_docstring_examples_are_accepted():
    # every `name:=value` in the docstring parses (the tiny model's budget range is checked by the node)
    text = (REPO / "launch" / "calvin_demo.launch.py").read_text().split('"""')[1]
    nodes = _nodes()
    specs = {s.name: s for n in NODES["calvin_demo.launch.py"] for s in nodes[n].arguments()}
    examples = re.findall(r"(\w+):=(\S+)", text)
    assert ("flops_budget", "0.004") in examples
    for name, value in examples:
        if name in specs and not value.startswith("/"):
            parse(specs[name], value)


# --- with `launch` installed: the launch files themselves ------------------------------------------------------

def _launch_description(name: str):
    pytest.importorskip("launch_ros", reason="launch_ros is not installable from PyPI; see docs/ros_tools.md")
    from launch.launch_description_sources import get_launch_description_from_python_launch_file

    return get_launch_description_from_python_launch_file(str(LAUNCH_FILES[name]))


@pytest.mark.parametrize("name", sorted(NODES))
def test_every_parameter_is_a_described_launch_argument(name):
    declared = {a.name: a for a in _launch_description(name).get_launch_arguments()}
    nodes = _nodes()
    for node_name in NODES[name]:
        node = nodes[node_name]
        assert node.params_file_argument in declared
        offered = set(declared) | FIXED.get(name, set())
        file_keys = set(read_params_file(REPO / "config" / node.params_file, node.name))
        assert file_keys <= offered, f"{name}: no argument for {sorted(file_keys - offered)}"
        assert {s.name for s in node.parameters} <= offered
    assert not FIXED.get(name, set()) & set(declared), f"{name}: a fixed parameter is also an argument"
    undescribed = [n for n, a in declared.items() if not a.description or a.description == "no description given"]
    assert not undescribed, f"{name}: arguments without a description: {undescribed}"
