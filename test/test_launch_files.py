"""Launch files cannot run here (no `launch` package from pip), so check statically what they reference:
every executable is installed by pyproject.toml and CMakeLists.txt, every params file exists and sets only declared
parameters, every parameter a Node action sets is declared by that node, every LaunchConfiguration is declared.
"""
import ast
import tomllib
from pathlib import Path

import pytest
import yaml

from deer_ros.ros.bridge_node import BRIDGE_PARAMETERS
from deer_ros.ros.policy_node import POLICY_PARAMETERS

REPO = Path(__file__).resolve().parents[1]
LAUNCH_FILES = sorted((REPO / "launch").glob("*.launch.py"))
DECLARED = {
    "deer_policy_node": {s.name for s in POLICY_PARAMETERS},
    "calvin_bridge_node": {s.name for s in BRIDGE_PARAMETERS},
}
BUILTIN_PARAMETERS = {"use_sim_time"}


def _kwarg(call: ast.Call, name: str):
    return next((k.value for k in call.keywords if k.arg == name), None)


def _node_calls(tree: ast.AST) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "Node"]


def _strings(node: ast.AST) -> list[str]:
    return [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def test_both_launch_files_exist():
    assert {p.name for p in LAUNCH_FILES} >= {"calvin_demo.launch.py", "robot.launch.py"}


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_references_exist(path: Path):
    tree = ast.parse(path.read_text())
    console_scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    cmake = (REPO / "CMakeLists.txt").read_text()
    nodes = _node_calls(tree)
    assert nodes, "a launch file must start at least one node"
    for call in nodes:
        exe = _kwarg(call, "executable").value
        assert exe in console_scripts, f"{exe} is not a console script in pyproject.toml"
        assert f"scripts/{exe}" in cmake and (REPO / "scripts" / exe).exists(), f"{exe} not installed by CMake"
        params = _kwarg(call, "parameters")
        yaml_files = [s for s in _strings(tree) if s.endswith(".yaml")]
        assert yaml_files, f"{path.name}: {exe} should use a params file from config/"
        for name in yaml_files:
            assert (REPO / "config" / name).exists(), f"{name} missing from config/"
        for dict_node in (n for n in ast.walk(params) if isinstance(n, ast.Dict)):
            for key in dict_node.keys:
                assert key.value in DECLARED[exe] | BUILTIN_PARAMETERS, f"{exe} does not declare {key.value}"


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_every_launch_configuration_is_declared(path: Path):
    tree = ast.parse(path.read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    declared = {c.args[0].value for c in calls if getattr(c.func, "id", None) == "DeclareLaunchArgument"}
    used = {c.args[0].value for c in calls if getattr(c.func, "id", None) == "LaunchConfiguration"}
    assert used <= declared, f"undeclared launch arguments: {sorted(used - declared)}"


@pytest.mark.parametrize("name,exe", [("deer_policy.yaml", "deer_policy_node"),
                                      ("calvin_bridge.yaml", "calvin_bridge_node")])
def test_params_files_set_only_declared_parameters_with_valid_values(name, exe):
    specs = {s.name: s for s in (POLICY_PARAMETERS if exe == "deer_policy_node" else BRIDGE_PARAMETERS)}
    content = yaml.safe_load((REPO / "config" / name).read_text())
    params = content["/**"]["ros__parameters"]
    assert set(params) <= set(specs), f"undeclared: {sorted(set(params) - set(specs))}"
    for key, value in params.items():
        assert specs[key].check(value) is None, specs[key].check(value)
