"""`python -m block_sdk.executor --block-id B --grpc-port P --http-port H --redis-url URL`.

Flags override `--config` (a JSON file) / `AIOS_EXECUTOR_CONFIG`, which override the
environment; see `block_sdk.executor.config`.
"""

from __future__ import annotations

import argparse
import sys

from block_sdk.executor.config import ExecutorConfigError, load_config
from block_sdk.executor.server import run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m block_sdk.executor", description=__doc__)
    p.add_argument("--block-id")
    p.add_argument("--grpc-port", type=int)
    p.add_argument("--http-port", type=int)
    p.add_argument("--grpc-host")
    p.add_argument("--http-host")
    p.add_argument("--redis-url")
    p.add_argument("--executor-id")
    p.add_argument("--config", help="JSON file (or JSON text) with ExecutorConfig fields")
    p.add_argument("--instances", help="comma-separated seed instance ids")
    p.add_argument("--lb-policy", help="round_robin | least_queue | module:Class")
    p.add_argument("--lb-parameters", help="JSON object, e.g. '{\"session_stickiness\": true}'")
    p.add_argument("--max-queue-length", type=int)
    p.add_argument("--max-pending", type=int)
    p.add_argument("--request-timeout-s", type=float)
    p.add_argument("--max-attempts", type=int)
    p.add_argument("--watch-interval-s", type=float)
    p.add_argument("--log-level")
    a = p.parse_args(argv)
    try:
        cfg = load_config(
            a.config,
            block_id=a.block_id,
            grpc_port=a.grpc_port,
            http_port=a.http_port,
            grpc_host=a.grpc_host,
            http_host=a.http_host,
            redis_url=a.redis_url,
            executor_id=a.executor_id,
            instances=a.instances,
            lb_policy=a.lb_policy,
            lb_parameters=a.lb_parameters,
            max_queue_length=a.max_queue_length,
            max_pending=a.max_pending,
            request_timeout_s=a.request_timeout_s,
            max_attempts=a.max_attempts,
            watch_interval_s=a.watch_interval_s,
            log_level=a.log_level,
        )
    except (ExecutorConfigError, OSError) as exc:
        print(f"executor config error: {exc}", file=sys.stderr)
        return 2
    run(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
