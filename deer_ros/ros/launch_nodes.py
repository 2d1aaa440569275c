"""The launch / launch_ros side of launch/*.launch.py: declared arguments, nodes started only once every
argument is checked (deer_ros/ros/launch_args.py), and the whole launch shut down when any node exits."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from deer_ros.paths import config_dir
from deer_ros.ros.launch_args import NodeLaunch, describe, node_parameters, read_params_file


@dataclass(frozen=True)
class Remap:
    """A topic of the node that a launch argument renames."""

    topic: str
    argument: str
    description: str


@dataclass(frozen=True)
class LaunchedNode:
    node: NodeLaunch
    fixed: Mapping[str, Any] = field(default_factory=dict)  # set by the launch file, not offered as arguments
    remaps: tuple[Remap, ...] = ()
    namespace_argument: str | None = None

    def offered(self):
        return [spec for spec in self.node.arguments() if spec.name not in self.fixed]


def deer_launch_description(launched: Sequence[LaunchedNode]) -> LaunchDescription:
    """Arguments of every node, then one action that checks them all and only then starts the nodes."""
    return LaunchDescription([*_declare(launched), OpaqueFunction(function=_start, args=[tuple(launched)])])


def _declare(launched: Sequence[LaunchedNode]) -> list[DeclareLaunchArgument]:
    declared = []
    for item in launched:
        node = item.node
        default_file = config_dir() / node.params_file
        declared.append(DeclareLaunchArgument(
            node.params_file_argument, default_value=str(default_file),
            description=f"Params file of {node.name} (ros__parameters under /** or {node.name}); the other "
                        f"{node.name} arguments override it."))
        file_values = read_params_file(default_file, node.name)
        declared += [DeclareLaunchArgument(spec.name, default_value="",
                                           description=describe(spec, file_values.get(spec.name)))
                     for spec in item.offered()]
        if item.namespace_argument:
            declared.append(DeclareLaunchArgument(item.namespace_argument, default_value="",
                                                  description=f"Namespace of {node.name} and its topics."))
        declared += [DeclareLaunchArgument(r.argument, default_value=r.topic, description=r.description)
                     for r in item.remaps]
    return declared


def _start(context: LaunchContext, launched: tuple[LaunchedNode, ...]) -> list[Node]:
    # Every node's arguments are checked before the first node is returned: a refusal (LaunchArgumentError)
    # ends the launch with its message and no process started.
    parameters = []
    for item in launched:
        given = {spec.name: LaunchConfiguration(spec.name).perform(context) for spec in item.offered()}
        params_file = LaunchConfiguration(item.node.params_file_argument).perform(context)
        parameters.append((params_file, {**node_parameters(item.node, given, params_file), **item.fixed}))
    return [_node(context, item, params_file, values) for item, (params_file, values) in zip(launched, parameters)]


def _node(context: LaunchContext, item: LaunchedNode, params_file: str, values: dict[str, Any]) -> Node:
    namespace = LaunchConfiguration(item.namespace_argument).perform(context) if item.namespace_argument else ""
    return Node(
        package="deer_ros",
        executable=item.node.executable,
        name=item.node.name,
        namespace=namespace or None,
        output="screen",
        parameters=[params_file, values],
        remappings=[(r.topic, LaunchConfiguration(r.argument).perform(context)) for r in item.remaps],
        # a node that ends (done, or died) ends the launch: nothing is left running without its peer
        on_exit=Shutdown(reason=f"{item.node.name} exited"),
    )
