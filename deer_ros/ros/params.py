"""Declarative ROS parameters: one table per node gives names, types, defaults, ranges and descriptions.

The same tables declare the parameters on the node (with ParameterDescriptor ranges, so `ros2 param describe`
shows them), validate values set at run time, and let tests check that every parameter a launch file or params
file sets is really declared.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType
from rclpy.node import Node
from rclpy.parameter import Parameter

_TYPES = {
    bool: ParameterType.PARAMETER_BOOL,
    int: ParameterType.PARAMETER_INTEGER,
    float: ParameterType.PARAMETER_DOUBLE,
    str: ParameterType.PARAMETER_STRING,
    list: ParameterType.PARAMETER_DOUBLE_ARRAY,
}


@dataclass(frozen=True)
class ParamSpec:
    """One declared parameter. `kind` is bool, int, float, str or list (a list of doubles)."""

    name: str
    kind: type
    default: Any
    description: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    read_only: bool = False

    def descriptor(self) -> ParameterDescriptor:
        text = self.description + (f" One of: {', '.join(self.choices)}." if self.choices else "")
        # dynamic_typing: the type is checked by `check` (via check_changes), whose refusal says what is expected
        # in words (rclpy's own check answers "Wrong parameter type, expected '3' got '4'"), and an integer is
        # accepted for a double, as `ros2 param set NODE flops_budget 2` sends one.
        d = ParameterDescriptor(name=self.name, type=_TYPES[self.kind], description=text, read_only=self.read_only,
                                dynamic_typing=True)
        if self.kind is float and self.low is not None:
            d.floating_point_range = [FloatingPointRange(from_value=float(self.low), to_value=float(self.high))]
        if self.kind is int and self.low is not None:
            d.integer_range = [IntegerRange(from_value=int(self.low), to_value=int(self.high), step=1)]
        return d

    def coerce(self, value: Any) -> Any:
        """ROS parses `-p x:=2` as an integer: take it for a double, and a number for a string ('0,2' lists)."""
        if isinstance(value, bool):
            return value
        if self.kind is float and isinstance(value, int):
            return float(value)
        if self.kind is str and isinstance(value, (int, float)):
            return str(value)
        return value

    def check(self, value: Any) -> str | None:
        """Why `value` is refused for this parameter, or None when it is acceptable."""
        value = self.coerce(value)
        if self.kind is list:
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, (int, float)) for v in value):
                return f"{self.name} must be a list of numbers"
            bad = [v for v in value if not math.isfinite(v)]
            return f"{self.name} must not contain NaN or Inf" if bad else None
        if not isinstance(value, self.kind) or (self.kind is int and isinstance(value, bool)):
            return f"{self.name} must be of type {self.kind.__name__}, got {type(value).__name__}"
        if self.kind is float and not math.isfinite(value):
            return f"{self.name} must be a finite number, got {value}"
        if self.low is not None and not (self.low <= value <= self.high):
            return f"{self.name}={value} is out of range [{self.low}, {self.high}]"
        if self.choices and value not in self.choices:
            return f"{self.name}='{value}' is not one of {', '.join(self.choices)}"
        return None


class ParameterError(ValueError):
    """A parameter value given at start-up (params file, -p) is refused."""


def declare(node: Node, specs: Iterable[ParamSpec]) -> None:
    """Declare every spec on `node`; values from params files and -p overrides apply here and are checked
    like later changes (ParameterError with the reason when one is refused)."""
    for spec in specs:
        if spec.kind is not list:
            node.declare_parameter(spec.name, spec.default, spec.descriptor())
            continue
        # An empty Python list would be typed as a byte array: declare the double[] type, then give the default
        # unless a params file or -p already set a value.
        node.declare_parameter(spec.name, None, spec.descriptor())
        if node.get_parameter_or(spec.name).type_ == Parameter.Type.NOT_SET:
            node.set_parameters([Parameter(spec.name, Parameter.Type.DOUBLE_ARRAY,
                                           [float(v) for v in spec.default])])
    for spec in specs:
        value = node.get_parameter(spec.name).value
        reason = spec.check(list(value) if spec.kind is list else value)
        if reason:
            raise ParameterError(f"parameter {reason}")


def values(node: Node, specs: Sequence[ParamSpec]) -> dict[str, Any]:
    """Current values of `specs` (double arrays as lists of floats)."""
    out = {}
    for spec in specs:
        value = node.get_parameter(spec.name).value
        out[spec.name] = [float(v) for v in value] if spec.kind is list else spec.coerce(value)
    return out


def check_changes(specs: Mapping[str, ParamSpec], params: Sequence[Parameter]) -> str | None:
    """Why a set of parameter changes is refused (type, range, choices), or None."""
    for param in params:
        spec = specs.get(param.name)
        if spec is None:
            continue  # not one of ours (use_sim_time, qos overrides): rclpy validates those itself
        if spec.read_only:
            return f"{param.name} is read-only: restart the node to change it"
        value = param.value
        if spec.kind is list and value is not None:
            value = list(value)
        reason = spec.check(value)
        if reason:
            return reason
    return None
