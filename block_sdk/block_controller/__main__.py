"""``python -m block_sdk.block_controller [--config JSON|PATH]``: run a block's controller."""

from __future__ import annotations

import argparse
import asyncio
import sys

from block_sdk.block_controller.config import ControllerConfigError, load_config
from block_sdk.block_controller.server import serve
from block_sdk.metrics import configure_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m block_sdk.block_controller")
    parser.add_argument(
        "--config", help="JSON text or a path (default: $AIOS_BLOCK_CONTROLLER_CONFIG)"
    )
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except (ControllerConfigError, OSError) as exc:
        print(f"block controller config error: {exc}", file=sys.stderr)
        return 2
    configure_logging(
        {"block_id": config.block_id, "service": "block_controller"}, config.log_level
    )
    try:
        asyncio.run(serve(config))
    except RuntimeError as exc:
        print(f"block controller failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
