"""The `main()` of every node executable: init, run, and a clean exit on Ctrl-C, SIGTERM or a known error."""
from __future__ import annotations

import sys
from typing import Callable, Sequence, TypeVar

import rclpy
from rclpy.executors import ExternalShutdownException

from deer_ros.ros.node_help import help_requested, node_help
from deer_ros.ros.params import ParameterError, ParamSpec

N = TypeVar("N")


def run_node(name: str, make: Callable[[], N], run: Callable[[N], int], args: list[str] | None = None,
             fatal: tuple[type[Exception], ...] = (), parameters: Sequence[ParamSpec] = ()) -> int:
    """Create a node with `make`, return what `run(node)` returns.

    A ParameterError or one of `fatal` (bad dataset, missing dependency...) is logged as one FATAL line and
    gives exit code 2, without a traceback; SIGINT/SIGTERM (rclpy shuts the context down) give 0, also when
    they arrive while the node is being created (a model loading). A second Ctrl-C during the clean-up ends
    it early, still without a traceback.
    -h/--help prints the node's help (its module docstring and `parameters`) and starts nothing.
    """
    if help_requested(args):
        print(node_help(f"{name}_node", sys.modules[make.__module__].__doc__, parameters))
        return 0
    rclpy.init(args=args)
    node = None
    code = 0
    try:
        node = make()
        code = run(node)
    except (ParameterError, *fatal) as exc:
        rclpy.logging.get_logger(name).fatal(str(exc))
        code = 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        try:
            if node is not None:
                node.close()
        except KeyboardInterrupt:
            rclpy.logging.get_logger(name).warning("second interrupt: clean-up cut short")
        finally:
            rclpy.try_shutdown()
    return code
