"""The QoS profiles of deer_ros topics: one definition for the nodes, the bench, the tests and the client.

  LATCHED  instruction, instruction_active, evaluation: reliable, transient-local, depth 1, so a subscriber that
           joins late still gets the last message (the current instruction)
  STREAM   the bridge's cameras, actions, expert actions and /clock: reliable, depth 10 (lockstep loses nothing)
  SENSOR   the policy node's camera subscriptions: rclpy's sensor-data profile (best effort, keep last), which
           matches both a reliable and a best-effort camera driver
"""
from __future__ import annotations

from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
STREAM = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
SENSOR = qos_profile_sensor_data
