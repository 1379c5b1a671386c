"""Tiny programs the node-agent tests run as workloads (``tests.clusters.programs:<fn>``)."""

from __future__ import annotations

import os
import signal
import sys
import time


def sleep_forever() -> int:
    # Exit cleanly on SIGTERM so a graceful stop is observable as code 0.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"started pid={os.getpid()} workload={os.environ.get('AIOS_WORKLOAD_ID')}", flush=True)
    while True:
        time.sleep(1)


def ignore_sigterm() -> int:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("ignoring SIGTERM", flush=True)
    while True:
        time.sleep(1)


def exit_now() -> int:
    return int(os.environ.get("EXIT_CODE", "0"))


def env_dump() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    for key in sorted(os.environ):
        if key.startswith(("AIOS_", "CUDA_", "NVIDIA_", "BLOCK_", "INSTANCE_", "DATABASE")):
            print(f"{key}={os.environ[key]}", flush=True)
    while True:
        time.sleep(1)
