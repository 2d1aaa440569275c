"""The launch files' arguments, made from the nodes' parameter tables and checked before any node starts.

Every parameter a node declares is a launch argument of the same name, with the parameter's description, type
and range. An argument left empty passes nothing, so the params file (the `params_file` argument, by default
the bundled config/*.yaml) decides; a given one is parsed and checked here, so a mistyped `flops_budget:=abc`
stops the launch with the argument's name before a process starts, instead of failing in one node while the
others run on. This module does not import `launch`: its checks run, and are tested, where launch is missing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from deer_ros.paths import MODEL_CALIBRATION_FILE
from deer_ros.ros.params import ParamSpec

_TYPE_NAMES = {bool: "bool (true or false)", int: "integer", float: "number", str: "string",
               list: "list of numbers ([0.1, 0.2])"}
_ARTICLES = {int: "an"}
USE_SIM_TIME = ParamSpec("use_sim_time", bool, False, "Use /clock (a simulator's or a bag's time) as the node "
                         "clock.")


class LaunchArgumentError(ValueError):
    """A launch argument or a params file value that a node would refuse: the launch stops before any node."""


@dataclass(frozen=True)
class NodeLaunch:
    """One node of a launch file: its executable, name, parameter table and params file argument."""

    executable: str
    name: str
    parameters: tuple[ParamSpec, ...]
    params_file: str  # the bundled default, in config/
    params_file_argument: str = "params_file"
    # checks and defaults across parameters (effective values, overrides so far) -> more overrides
    resolve: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]] | None = field(default=None, compare=False)

    def arguments(self) -> tuple[ParamSpec, ...]:
        """The parameters offered as launch arguments (all declared ones, and use_sim_time)."""
        return (*self.parameters, USE_SIM_TIME)


def describe(spec: ParamSpec, file_value: Any = None) -> str:
    """The launch argument's description: the parameter's, its type and range, and what '' means."""
    text = f"{spec.description} Type: {_TYPE_NAMES[spec.kind]}"
    if spec.low is not None:
        text += f", range [{spec.low}, {spec.high}]"
    if spec.choices:
        text += f", one of {', '.join(spec.choices)}"
    shown = spec.default if file_value is None else file_value
    return f"{text}. Empty: from the params file ({_text(shown)})."


def parse(spec: ParamSpec, text: str) -> Any:
    """The value of `name:=text` as the node would receive it, or LaunchArgumentError naming the argument."""
    value = _typed(spec, text.strip())
    reason = spec.check(value)
    if reason:
        raise LaunchArgumentError(f"launch argument {spec.name}:={text}: {reason}")
    return spec.coerce(value)


def _typed(spec: ParamSpec, text: str) -> Any:
    expected = (f"launch argument {spec.name}:={text} is not {_ARTICLES.get(spec.kind, 'a')} "
                f"{_TYPE_NAMES[spec.kind]}")
    try:
        if spec.kind is bool:
            if text.lower() not in ("true", "false"):
                raise ValueError(text)
            return text.lower() == "true"
        if spec.kind is int:
            return int(text)
        if spec.kind is float:
            value = float(text)
            if not math.isfinite(value):
                raise ValueError(text)
            return value
        if spec.kind is list:
            value = yaml.safe_load(text)
            if not isinstance(value, list):
                raise ValueError(text)
            return value
    except (ValueError, yaml.YAMLError):
        example = {bool: "true", int: "2", float: "0.5", list: "[0.1, 0.2]"}[spec.kind]
        raise LaunchArgumentError(f"{expected}; e.g. {spec.name}:={example}") from None
    return text


def read_params_file(path: Path | str, node_name: str) -> dict[str, Any]:
    """The ros__parameters a params file gives `node_name` (sections `/**`, `node_name`, `/node_name`)."""
    path = Path(path)
    try:
        content = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise LaunchArgumentError(f"params file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise LaunchArgumentError(f"params file {path} is not valid YAML: {exc}") from None
    out: dict[str, Any] = {}
    for key in ("/**", node_name, f"/{node_name}"):
        section = content.get(key) if isinstance(content, dict) else None
        if isinstance(section, dict):
            out.update(section.get("ros__parameters") or {})
    return out


def node_parameters(node: NodeLaunch, given: Mapping[str, str], params_file: Path | str) -> dict[str, Any]:
    """The parameters to pass on top of the params file: each non-empty argument, typed and checked, plus what
    `node.resolve` adds. Values the params file sets are checked too, since the node would refuse them."""
    specs = {spec.name: spec for spec in node.arguments()}
    file_values = read_params_file(params_file, node.name)
    for name, value in file_values.items():
        reason = specs[name].check(value) if name in specs else None
        if reason:
            raise LaunchArgumentError(f"params file {params_file}: {reason}")
    overrides = {name: parse(specs[name], text) for name, text in given.items()
                 if name in specs and text.strip() != ""}
    if node.resolve is not None:
        effective = {spec.name: spec.default for spec in node.arguments()}
        effective.update(file_values)
        effective.update(overrides)
        overrides.update(node.resolve(effective, overrides))
    return overrides


def policy_calibration(effective: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint without a calibration argument: a model folder's own calibration.npz (the node finds it), or
    for a single file `<checkpoint stem>_calibration.npz` next to it (what `deer-ros train --calibrate` writes);
    refuse a budget that would need one when there is none, with the command that makes it."""
    checkpoint, calibration = effective.get("checkpoint", ""), effective.get("calibration", "")
    if not checkpoint or calibration:
        return {}  # the bundled demo model finds its own calibration; an explicit one is the user's choice
    path = Path(checkpoint).expanduser()
    if path.is_dir():
        beside = path / MODEL_CALIBRATION_FILE
        if beside.is_file():
            return {}
    else:
        beside = path.with_name(path.stem + "_calibration.npz")
        if beside.is_file():
            return {"calibration": str(beside)}
    if effective.get("flops_budget", 0.0) > 0 and not effective.get("thresholds"):
        raise LaunchArgumentError(
            f"flops_budget:={effective['flops_budget']} with checkpoint:={checkpoint} needs a calibration file, "
            f"and there is no calibration:=FILE argument nor {beside}. Make one with `deer-ros calibrate "
            f"--model {effective.get('model', 'tiny')} --checkpoint {checkpoint} --dataset CALVIN_ROOT --out "
            f"{beside}`, or run without a budget (max_exit or thresholds still work)")
    return {}


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "''" if value == "" else str(value)


def policy_launch() -> NodeLaunch:
    from deer_ros.ros.policy_node import NODE_NAME, POLICY_PARAMETERS

    return NodeLaunch("deer_policy_node", NODE_NAME, POLICY_PARAMETERS, "deer_policy.yaml",
                      resolve=policy_calibration)


def bridge_launch() -> NodeLaunch:
    from deer_ros.ros.bridge_node import BRIDGE_PARAMETERS, NODE_NAME

    return NodeLaunch("calvin_bridge_node", NODE_NAME, BRIDGE_PARAMETERS, "calvin_bridge.yaml",
                      params_file_argument="bridge_params_file")
