"""``python -m block_sdk.node_metrics``: run the node-metrics agent until SIGTERM."""

from __future__ import annotations

from block_sdk.node_metrics.agent import main

if __name__ == "__main__":
    raise SystemExit(main())
