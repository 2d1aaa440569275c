"""A run as a Rerun recording (.rrd): `rerun run.rrd` shows it; `rerun rrd print run.rrd` lists what it holds.

Logged from a bag, on the `stamp` timeline (header stamps, so sim time for bridge runs):
    camera/static, camera/gripper   the images (rr.Image)
    instruction                     each instruction as it is given (rr.TextDocument)
    action                          the 7 action components of `action_topic` (rr.Scalars)
    policy/exit, policy/layers      the exit chosen and the layers it ran
    policy/gflops, policy/budget    GFLOPs spent per action and the average-GFLOPs budget in force
    policy/latency_ms               observation to action
    policy/criterion                the exit criterion's value at each exit examined (instance k = exit k+1;
                                    actions that carry none, such as expert actions, log nothing here)
"""
from __future__ import annotations

import os
from pathlib import Path

from deer_ros.bag import types as T
from deer_ros.bag.reader import header_ns, open_reader
from deer_ros.dependencies import require

ENTITIES = ("camera/static", "camera/gripper", "instruction", "action", "policy/exit", "policy/layers",
            "policy/gflops", "policy/budget", "policy/latency_ms", "policy/criterion")


def log_bag(bag: str | os.PathLike, rrd: str | os.PathLike, action_topic: str = T.POLICY_TOPIC) -> dict[str, int]:
    """Write the run recorded in `bag` to the Rerun file `rrd`; returns how many values each entity got."""
    # Rerun's anonymous usage reports are off unless the user turned them on: a robot's network is not ours to use.
    os.environ.setdefault("RERUN_ANALYTICS", "false")
    rr = require("rerun", "logging a run to Rerun")
    from deer_ros.images import image_to_rgb

    bag, rrd = Path(bag).expanduser(), Path(rrd).expanduser()
    store = T.typestore()
    roles = {T.STATIC_TOPIC: "camera/static", T.GRIPPER_TOPIC: "camera/gripper",
             T.INSTRUCTION_TOPIC: "instruction", action_topic: "action"}
    counts = dict.fromkeys(ENTITIES, 0)
    rec = rr.RecordingStream("deer_ros", recording_id=bag.name)
    rec.save(rrd)
    reader = open_reader(bag)
    try:
        conns = [c for c in reader.connections if c.topic in roles]
        for conn, log_ns, raw in reader.messages(connections=conns):
            msg = store.deserialize_cdr(raw, conn.msgtype)
            role = roles[conn.topic]
            # Instructions have no header: they go on the timeline at the time they were logged.
            stamp = log_ns if role == "instruction" else header_ns(bag, conn.topic, msg)
            rec.set_time("stamp", duration=stamp * 1e-9)
            if role.startswith("camera/"):
                rec.log(role, rr.Image(image_to_rgb(msg)))
                counts[role] += 1
            elif role == "instruction":
                rec.log(role, rr.TextDocument(msg.data))
                counts[role] += 1
            else:
                values = {"action": [*msg.translation, *msg.rotation, msg.gripper], "policy/exit": [msg.exit_index],
                          "policy/layers": [msg.layers], "policy/gflops": [msg.gflops],
                          "policy/budget": [msg.flops_budget], "policy/latency_ms": [msg.latency_ms]}
                if len(msg.criterion_values):
                    values["policy/criterion"] = msg.criterion_values
                for entity, value in values.items():
                    rec.log(entity, rr.Scalars([float(v) for v in value]))
                    counts[entity] += 1
    finally:
        reader.close()
        rec.flush()
        rec.disconnect()
    return counts
