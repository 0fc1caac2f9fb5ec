"""Entry point of ``segment_node``: the process around the node (``ros2 run xmodelkd_ros
segment_node``, or ``python -m xmodelkd_ros.node.main``).

Why apart from the wiring (:mod:`xmodelkd_ros.node.segment_node`): this is where the
process's promises live. Whatever stops the node before it spins (params file, rcl's own
argument parser, missing/corrupt model, bad parameter) ends it with one log line and exit
code 1, never a traceback; ``build_only`` builds the TensorRT engine and exits 0; a
SIGINT or an external shutdown is a clean exit 0, the workers stopped before the node is
destroyed.

It is also where the process's threads learn not to spin: OpenMP reads its wait policy
once, when torch or the fused kernels load it, so :func:`~xmodelkd_ros.procenv.quiet_cpu_threads`
runs before the imports below that load them (docs/performance.md: on 2 cores with one
busy process beside the node, spinning threads made one stage 25x slower at p95).
"""

from __future__ import annotations

import sys
from pathlib import Path

from xmodelkd_ros.procenv import quiet_cpu_threads

#: OpenMP's wait policy for this process and who chose it (reported in /diagnostics).
CPU_WAIT_POLICY = quiet_cpu_threads()

from xmodelkd_ros.node.params import ConfigError, check_params_files  # noqa: E402
from xmodelkd_ros.node.processing import StartupError  # noqa: E402
from xmodelkd_ros.node.segment_node import NODE_NAME, RCLPY_ERROR, SegmentNode  # noqa: E402

if RCLPY_ERROR is None:  # without it main() reports why, in one line
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor


def _build_only(node: SegmentNode) -> None:
    cfg = node.cfg.model
    if not Path(cfg.path).is_dir():
        raise StartupError(f"build_only needs an exported model dir, got {cfg.path}")
    from xmodelkd_ros.runtime import build_only

    try:
        path = build_only(cfg.path, cfg.engine_cache_dir or None, fp16=cfg.fp16)
    except Exception as exc:
        raise StartupError(f"TensorRT engine build failed: {exc}") from None
    node.get_logger().info(f"build_only: TensorRT engine ready at {path}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``segment_node``; returns the process exit code."""
    args = list(sys.argv if argv is None else argv)
    if RCLPY_ERROR is not None:
        _fatal(None, f"rclpy is not importable ({RCLPY_ERROR})")
        return 1
    try:
        check_params_files(args)
    except ConfigError as exc:
        _fatal(None, str(exc))
        return 1
    try:
        rclpy.init(args=args)
    except Exception as exc:  # rcl's own argument / params-file parser: one line too
        _fatal(None, f"cannot start ROS: {exc}")
        return 1
    node: SegmentNode | None = None
    try:
        try:
            node = SegmentNode()
            if node.cfg.model.build_only:
                _build_only(node)
                return 0
            node.start()
        except (StartupError, ConfigError) as exc:
            _fatal(node, str(exc))
            return 1
        except rclpy.exceptions.ParameterException as exc:
            _fatal(node, f"bad parameter: {exc}")
            return 1
        except Exception as exc:  # unexpected, but still one line, not a traceback
            _fatal(node, f"startup failed: {type(exc).__name__}: {exc}")
            return 1
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        try:
            executor.spin()
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        except Exception:
            # rclpy's signal handler shuts the context down from its own thread; landing
            # while the executor builds a wait set, that surfaces as rcl's "context is not
            # valid" RCLError instead of ExternalShutdownException (seen once in CI: a
            # SIGINT'd node exited 1 with a traceback). With the context down it is the
            # requested stop; with ROS still up it is a real error and propagates.
            if node.context.ok():
                raise
        return 0
    finally:
        if node is not None:
            node.stop()
            node.destroy_node()
        rclpy.try_shutdown()


def _fatal(node: SegmentNode | None, message: str) -> None:
    # One line, whatever the exception text looked like (torch errors span paragraphs).
    message = " ".join(message.split())
    if len(message) > 400:
        message = message[:397] + "..."
    if node is not None:
        node.get_logger().fatal(message)
    else:
        print(f"[FATAL] [{NODE_NAME}]: {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
