"""The embedded default: real PostgreSQL and Redis from pip, reused, then stopped."""

import os
import subprocess
import sys

import psycopg
import redis

from tests.support.procs import ROOT


def run_embedded(data_dir, *args):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env["AIOS_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [sys.executable, "-m", "aios_site.embedded", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout


def parse_env(text):
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def test_embedded_servers_start_are_reused_and_stop(tmp_path):
    data_dir = tmp_path / "aios"
    try:
        first = parse_env(run_embedded(data_dir, "start"))
        with psycopg.connect(first["DATABASE_URL"], connect_timeout=10) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert redis.Redis.from_url(first["REDIS_URL"], socket_timeout=5).ping()

        # A second process with the same data dir reuses the running servers.
        second = parse_env(run_embedded(data_dir, "start"))
        assert second == first
        assert "postgres: running" in run_embedded(data_dir, "status")
    finally:
        run_embedded(data_dir, "stop")
    status = run_embedded(data_dir, "status")
    assert "postgres: stopped" in status and "redis: stopped" in status
