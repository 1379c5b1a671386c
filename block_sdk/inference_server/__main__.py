"""`python -m block_sdk.inference_server --server-id S --grpc-port P --http-port H
--redis-url URL [--api-url URL --api-token T] [--log-dsn postgresql://...] [...]`.

Flags override `--config` (a JSON file or text) / `AIOS_INFERENCE_SERVER_CONFIG`, which
override the environment; see `block_sdk.inference_server.config`.
"""

from __future__ import annotations

import argparse
import sys

from block_sdk.inference_server.config import ServerConfigError, load_config


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m block_sdk.inference_server", description=__doc__)
    p.add_argument("--server-id")
    p.add_argument("--cluster-id")
    p.add_argument("--config", help="JSON file (or JSON text) with ServerConfig fields")
    p.add_argument("--executors", help="JSON object block_id -> executor address")
    p.add_argument("--grpc-host")
    p.add_argument("--grpc-port", type=int)
    p.add_argument("--http-host")
    p.add_argument("--http-port", type=int)
    p.add_argument("--advertise-grpc")
    p.add_argument("--redis-url")
    p.add_argument("--request-timeout-s", type=float)
    p.add_argument("--api-url", help="control plane URL (search, policy registry)")
    p.add_argument("--api-token")
    p.add_argument("--quota-policy", help="policy URI or JSON object; '' disables")
    p.add_argument("--policy-dir")
    p.add_argument("--log-dsn", help="PostgreSQL URL for request logs")
    p.add_argument("--log-flush-ms", type=int)
    p.add_argument("--log-batch-rows", type=int)
    p.add_argument("--create-log-table", action="store_true", default=None)
    p.add_argument("--log-level")
    a = p.parse_args(argv)
    try:
        cfg = load_config(
            a.config,
            server_id=a.server_id,
            cluster_id=a.cluster_id,
            executors=a.executors,
            grpc_host=a.grpc_host,
            grpc_port=a.grpc_port,
            http_host=a.http_host,
            http_port=a.http_port,
            advertise_grpc=a.advertise_grpc,
            redis_url=a.redis_url,
            request_timeout_s=a.request_timeout_s,
            api_url=a.api_url,
            api_token=a.api_token,
            quota_policy=a.quota_policy,
            policy_dir=a.policy_dir,
            log_dsn=a.log_dsn,
            log_flush_ms=a.log_flush_ms,
            log_batch_rows=a.log_batch_rows,
            create_log_table=a.create_log_table,
            log_level=a.log_level,
        )
    except (ServerConfigError, OSError) as exc:
        print(f"inference server config error: {exc}", file=sys.stderr)
        return 2
    from block_sdk.inference_server.server import run

    try:
        run(cfg)
    except Exception as exc:  # a policy that cannot load, a port in use: say so and exit 1
        print(f"inference server failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
