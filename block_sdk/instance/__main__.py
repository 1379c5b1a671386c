"""`python -m block_sdk.instance --entrypoint module.path:ClassName [flags]`.

Flags override the environment variables read by `InstanceConfig.from_env` (BLOCK_ID,
INSTANCE_ID, REDIS_URL, BLOCK_INIT_DATA, ...). The entry point may also come from
`AIOS_ENTRYPOINT`.
"""

from __future__ import annotations

import argparse
import os
import sys

from block_sdk.instance.config import ConfigError, InstanceConfig
from block_sdk.instance.pipeline import load_class
from block_sdk.instance.runtime import Block


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m block_sdk.instance", description=__doc__)
    p.add_argument("--entrypoint", default=os.environ.get("AIOS_ENTRYPOINT"))
    p.add_argument("--block-id")
    p.add_argument("--instance-id")
    p.add_argument("--redis-url")
    p.add_argument("--http-host")
    p.add_argument("--http-port", type=int)
    p.add_argument("--concurrency", type=int)
    p.add_argument("--register-self", action="store_true", default=None)
    p.add_argument("--log-level")
    a = p.parse_args(argv)
    if not a.entrypoint:
        p.error("--entrypoint (or AIOS_ENTRYPOINT) is required")
    try:
        cfg = InstanceConfig.from_env(
            block_id=a.block_id,
            instance_id=a.instance_id,
            redis_url=a.redis_url,
            http_host=a.http_host,
            http_port=a.http_port,
            concurrency=a.concurrency,
            register_self=a.register_self,
            log_level=a.log_level,
        )
        cls = load_class(a.entrypoint)
    except (ConfigError, ImportError, AttributeError, ValueError, TypeError) as exc:
        print(f"instance start error: {exc}", file=sys.stderr)
        return 2
    Block(cls, config=cfg).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
