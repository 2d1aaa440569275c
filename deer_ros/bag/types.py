"""The message types a deer_ros bag holds, as a rosbags typestore (no ROS install needed to read or write).

deer_ros's own messages are generated from msg/*.msg (the files the ROS build uses), so a bag's schemas carry
exactly the definitions a ROS 2 install with deer_ros built would have, and `ros2 bag play` can publish them.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from deer_ros.dependencies import require

MSG_DIR = Path(__file__).resolve().parents[2] / "msg"
PACKAGE = "deer_ros"
IMAGE = "sensor_msgs/msg/Image"
STRING = "std_msgs/msg/String"
CLOCK = "rosgraph_msgs/msg/Clock"
ACTION = f"{PACKAGE}/msg/EndEffectorAction"
INSTRUCTION_STATUS = f"{PACKAGE}/msg/InstructionStatus"


@dataclass(frozen=True)
class TopicSpec:
    """One topic the recorder records: its ROS type and whether its publishers latch (transient local)."""

    name: str
    msgtype: str
    latched: bool = False


# What the bridge and the policy node publish (docs/architecture.md), with the QoS they publish with.
STATIC_TOPIC = "camera/static/image_raw"
GRIPPER_TOPIC = "camera/gripper/image_raw"
INSTRUCTION_TOPIC = "instruction"
EXPERT_TOPIC = "expert_action"
POLICY_TOPIC = "action"
DEFAULT_TOPICS = (
    TopicSpec(STATIC_TOPIC, IMAGE),
    TopicSpec(GRIPPER_TOPIC, IMAGE),
    TopicSpec(INSTRUCTION_TOPIC, STRING, latched=True),
    TopicSpec(EXPERT_TOPIC, ACTION),
    TopicSpec(POLICY_TOPIC, ACTION),
    TopicSpec("instruction_active", INSTRUCTION_STATUS, latched=True),
    TopicSpec("/clock", CLOCK),
)


def rosbags() -> Any:
    """The rosbags package, or MissingDependency naming the `bag` extra."""
    return require("rosbags", "reading and writing rosbag2 bags")


@lru_cache(maxsize=1)
def typestore() -> Any:
    """A Kilted typestore with deer_ros/msg/* registered from the package's .msg files."""
    rosbags()
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    files = sorted(MSG_DIR.glob("*.msg"))
    if not files:
        raise FileNotFoundError(f"{MSG_DIR}: deer_ros's .msg files are not there; bags need them for the message "
                                "definitions. Use a source checkout (pip install -e .), where msg/ sits beside "
                                "deer_ros/.")
    types: dict = {}
    for path in files:
        types.update(get_types_from_msg(path.read_text(), f"{PACKAGE}/msg/{path.stem}"))
    store.register(types)
    return store


def qos_profile(latched: bool, depth: int = 10) -> Any:
    """The rosbags QoS record of a deer_ros publisher (reliable; latched ones transient local, depth 1)."""
    rosbags()
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    never = QosTime(sec=0, nsec=0)
    return Qos(history=QosHistory.KEEP_LAST, depth=1 if latched else depth, reliability=QosReliability.RELIABLE,
               durability=QosDurability.TRANSIENT_LOCAL if latched else QosDurability.VOLATILE,
               deadline=never, lifespan=never, liveliness=QosLiveliness.AUTOMATIC,
               liveliness_lease_duration=never, avoid_ros_namespace_conventions=False)
