"""Declarative ROS parameters: one table per node gives names, types, defaults, ranges and descriptions.

The same tables declare the parameters on the node (with ParameterDescriptor ranges, so `ros2 param describe`
shows them), validate values set at run time, and let tests check that every parameter a launch file or params
file sets is really declared.

Types are fixed once declared (rclpy refuses a value of another type before any callback sees it), with one
courtesy: an integer given for a double (`ros2 param set NODE flops_budget 2`, `-p flops_budget:=2`) and an
integer or empty array given for a double array are converted first (`coerce_parameters`, a pre-set callback).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.node import Node
from rclpy.parameter import Parameter

_TYPES = {
    bool: ParameterType.PARAMETER_BOOL,
    int: ParameterType.PARAMETER_INTEGER,
    float: ParameterType.PARAMETER_DOUBLE,
    str: ParameterType.PARAMETER_STRING,
    list: ParameterType.PARAMETER_DOUBLE_ARRAY,
}
_PARAMETER_TYPES = {bool: Parameter.Type.BOOL, int: Parameter.Type.INTEGER, float: Parameter.Type.DOUBLE,
                    str: Parameter.Type.STRING, list: Parameter.Type.DOUBLE_ARRAY}
_ARRAYS = (Parameter.Type.BYTE_ARRAY, Parameter.Type.BOOL_ARRAY, Parameter.Type.INTEGER_ARRAY,
           Parameter.Type.DOUBLE_ARRAY, Parameter.Type.STRING_ARRAY)


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

    def descriptor(self, low: float | None = None, high: float | None = None, note: str = "",
                   dynamic_typing: bool = False) -> ParameterDescriptor:
        """The descriptor as declared; `low`/`high`/`note` narrow the range and explain it (a loaded model)."""
        text = self.description + (f" One of: {', '.join(self.choices)}." if self.choices else "") + note
        d = ParameterDescriptor(name=self.name, type=_TYPES[self.kind], description=text, read_only=self.read_only,
                                dynamic_typing=dynamic_typing)
        low = self.low if low is None else low
        high = self.high if high is None else high
        if self.kind is float and low is not None:
            d.floating_point_range = [FloatingPointRange(from_value=float(low), to_value=float(high))]
        if self.kind is int and low is not None:
            d.integer_range = [IntegerRange(from_value=int(low), to_value=int(high), step=1)]
        return d

    def coerce(self, value: Any) -> Any:
        """ROS parses `-p x:=2` as an integer: take it for a double, and a number for a string ('0,2' lists)."""
        if isinstance(value, bool):
            return value
        if self.kind is float and isinstance(value, int):
            return float(value)
        if self.kind is str and isinstance(value, (int, float)):
            return str(value)
        if self.kind is list and _is_sequence(value):
            return [float(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
        return value

    def check(self, value: Any) -> str | None:
        """Why `value` is refused for this parameter, or None when it is acceptable."""
        value = self.coerce(value)
        if self.kind is list:
            if not _is_sequence(value) or not all(isinstance(v, float) for v in value):
                return f"{self.name} must be a list of numbers, got {_show(value)}"
            bad = [v for v in value if not math.isfinite(v)]
            return f"{self.name} must not contain NaN or Inf" if bad else None
        if not isinstance(value, self.kind) or (self.kind is int and isinstance(value, bool)):
            return f"{self.name} must be of type {self.kind.__name__}, got {type(value).__name__} {_show(value)}"
        if self.kind is float and not math.isfinite(value):
            return f"{self.name} must be a finite number, got {value}"
        if self.low is not None and not (self.low <= value <= self.high):
            return f"{self.name}={value} is out of range [{self.low}, {self.high}]"
        if self.choices and value not in self.choices:
            return f"{self.name}='{value}' is not one of {', '.join(self.choices)}"
        return None

    def parameter(self, value: Any) -> Parameter:
        """`value` (already checked) as an rclpy Parameter of the declared type."""
        return Parameter(self.name, _PARAMETER_TYPES[self.kind], self.coerce(value))


def _is_sequence(value: Any) -> bool:
    return not isinstance(value, (str, bytes)) and hasattr(value, "__len__") and hasattr(value, "__iter__")


def _show(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


class ParameterError(ValueError):
    """A parameter value given at start-up (params file, -p) is refused."""


def declare(node: Node, specs: Iterable[ParamSpec]) -> None:
    """Declare every spec on `node`; values from params files and -p overrides apply here and are checked
    like later changes (ParameterError with the reason when one is refused, never rclpy's traceback).

    Each parameter is first declared loosely (any type, no range) so that a start-up value of the wrong type or
    out of range reaches our check and its one-line reason; then its fixed-type descriptor is installed, and a
    pre-set callback converts integers for doubles from then on. rclpy without pre-set callbacks (before Iron)
    keeps the types dynamic: the node's own check still refuses a wrong type.
    """
    specs = list(specs)
    fixed = hasattr(node, "add_pre_set_parameters_callback")
    if fixed:
        table = {spec.name: spec for spec in specs}
        node.add_pre_set_parameters_callback(lambda params: coerce_parameters(table, params))
    for spec in specs:
        loose = ParameterDescriptor(name=spec.name, dynamic_typing=True)
        try:
            node.declare_parameter(spec.name, None if spec.kind is list else spec.default, loose)
        except (InvalidParameterTypeException, InvalidParameterValueException) as exc:  # e.g. an unreadable value
            raise ParameterError(f"parameter {spec.name}: {exc}") from None
        current = node.get_parameter(spec.name)
        value = spec.default if current.type_ == Parameter.Type.NOT_SET else current.value
        reason = spec.check(value)
        if reason:
            raise ParameterError(f"parameter {reason}")
        node.set_descriptor(spec.name, spec.descriptor(dynamic_typing=not fixed),
                            spec.parameter(value).get_parameter_value())


def coerce_parameters(specs: Mapping[str, ParamSpec], params: list[Parameter]) -> list[Parameter]:
    """A pre-set-parameters callback: an integer for a double, and an integer or empty array for a double
    array, become the declared type; everything else passes unchanged (rclpy then checks the type)."""
    out = []
    for param in params:
        spec = specs.get(param.name)
        if spec is not None and spec.kind is float and param.type_ == Parameter.Type.INTEGER:
            param = Parameter(param.name, Parameter.Type.DOUBLE, float(param.value))
        elif spec is not None and spec.kind is list and param.type_ in _ARRAYS and (
                param.type_ == Parameter.Type.INTEGER_ARRAY or len(param.value) == 0):
            param = Parameter(param.name, Parameter.Type.DOUBLE_ARRAY, [float(v) for v in param.value])
        out.append(param)
    return out


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
        reason = spec.check(param.value)
        if reason:
            return reason
    return None
