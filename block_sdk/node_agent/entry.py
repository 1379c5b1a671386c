"""Run a ``pkg.module:callable`` workload entry point: ``python -m block_sdk.node_agent.entry
pkg.module:callable [args...]``. The callable gets no arguments (``sys.argv`` holds the args);
an int it returns becomes the exit code."""

from __future__ import annotations

import importlib
import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or ":" not in argv[0]:
        sys.stderr.write("usage: python -m block_sdk.node_agent.entry pkg.module:callable ...\n")
        return 2
    target, args = argv[0], argv[1:]
    module_name, _, attr = target.partition(":")
    obj = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    sys.argv = [target, *args]
    result = obj()
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    raise SystemExit(main())
