"""`python -m block_sdk.vdag_controller --vdag-uri U --graph-file G --grpc-port P
--http-port H --redis-url URL [...]`.

Flags override `--config` (a JSON file or text) / `AIOS_VDAG_CONTROLLER_CONFIG`, which override
the environment; see `block_sdk.vdag_controller.config`.
"""

from __future__ import annotations

import argparse
import sys

from block_sdk.vdag_controller.config import ControllerConfigError, load_config


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m block_sdk.vdag_controller", description=__doc__)
    p.add_argument("--vdag-uri")
    p.add_argument("--controller-id")
    p.add_argument("--cluster-id")
    p.add_argument("--config", help="JSON file (or JSON text) with ControllerConfig fields")
    p.add_argument("--graph-file", help="compiled graph (or vDAG spec graph) as a JSON file")
    p.add_argument("--graph-json", help="the same as JSON text")
    p.add_argument("--executors", help="JSON object block_id -> executor address")
    p.add_argument("--grpc-host")
    p.add_argument("--grpc-port", type=int)
    p.add_argument("--http-host")
    p.add_argument("--http-port", type=int)
    p.add_argument("--advertise-grpc", help="host:port blocks of other clusters reach us at")
    p.add_argument("--redis-url")
    p.add_argument("--request-timeout-s", type=float)
    p.add_argument("--quota-policy", help="policy URI or JSON object; '' disables")
    p.add_argument("--quality-policy", help="policy URI or JSON object; '' disables")
    p.add_argument("--health-policy", help="policy URI or JSON object")
    p.add_argument("--health-interval-s", type=float)
    p.add_argument("--metrics-interval-s", type=float)
    p.add_argument("--policy-dir", help="folder of policies (<dir>/<uri>/code/function.py)")
    p.add_argument("--api-url", help="control plane URL (policy registry)")
    p.add_argument("--quality-sink-url", help="POST each recorded quality sample here")
    p.add_argument("--log-level")
    a = p.parse_args(argv)
    try:
        cfg = load_config(
            a.config,
            graph_source=a.graph_json or a.graph_file,
            vdag_uri=a.vdag_uri,
            controller_id=a.controller_id,
            cluster_id=a.cluster_id,
            executors=a.executors,
            grpc_host=a.grpc_host,
            grpc_port=a.grpc_port,
            http_host=a.http_host,
            http_port=a.http_port,
            advertise_grpc=a.advertise_grpc,
            redis_url=a.redis_url,
            request_timeout_s=a.request_timeout_s,
            quota_policy=a.quota_policy,
            quality_policy=a.quality_policy,
            health_policy=a.health_policy,
            health_interval_s=a.health_interval_s,
            metrics_interval_s=a.metrics_interval_s,
            policy_dir=a.policy_dir,
            api_url=a.api_url,
            quality_sink_url=a.quality_sink_url,
            log_level=a.log_level,
        )
    except (ControllerConfigError, OSError) as exc:
        print(f"vdag controller config error: {exc}", file=sys.stderr)
        return 2
    from block_sdk.vdag_controller.server import run

    try:
        run(cfg)
    except Exception as exc:  # a policy that cannot load, a port in use: say so and exit 1
        print(f"vdag controller failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
