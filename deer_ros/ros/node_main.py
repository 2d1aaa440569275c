"""The `main()` of every node executable: init, run, and a clean exit on Ctrl-C, SIGTERM or a known error."""
from __future__ import annotations

from typing import Callable, TypeVar

import rclpy
from rclpy.executors import ExternalShutdownException

from deer_ros.ros.params import ParameterError

N = TypeVar("N")


def run_node(name: str, make: Callable[[], N], run: Callable[[N], int], args: list[str] | None = None,
             fatal: tuple[type[Exception], ...] = ()) -> int:
    """Create a node with `make`, return what `run(node)` returns.

    A ParameterError or one of `fatal` (bad dataset, missing dependency...) is logged as one FATAL line and
    gives exit code 2, without a traceback; SIGINT/SIGTERM (rclpy shuts the context down) give 0, also when
    they arrive while the node is being created (a model loading). A second Ctrl-C during the clean-up ends
    it early, still without a traceback.
    """
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
