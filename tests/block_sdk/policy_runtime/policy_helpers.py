"""Builders and policy sources shared by the policy runtime tests (not fixtures: see conftest)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import select
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]

TEST_TIMEOUT = 2.0  # wall clock per sandboxed call in these tests

# A policy whose behaviour is chosen by input_data["op"]: one archive covers every bad case.
BEHAVIOUR_POLICY = """
import json
import os
import sys
import threading
import time


class AIOSv1PolicyRule:
    def __init__(self, rule_id, settings, parameters):
        self.rule_id = rule_id
        self.settings = settings
        self.parameters = parameters
        self.calls = 0

    def eval(self, parameters, input_data, context):
        self.calls += 1
        context["calls"] = context.get("calls", 0) + 1
        op = input_data.get("op", "echo")
        if op == "echo":
            return {"echo": input_data.get("value"), "calls": self.calls, "pid": os.getpid(),
                    "context_calls": context["calls"], "parameters": parameters,
                    "rule_id": self.rule_id}
        if op == "raise":
            raise ValueError("boom from policy")
        if op == "loop":
            while True:
                pass
        if op == "sleep":
            time.sleep(float(input_data.get("seconds", 60)))
            return {"slept": True}
        if op == "allocate":
            block = bytearray(10 * 1024 ** 3)  # 10 GB
            return {"allocated": len(block)}
        if op == "exit":
            os._exit(7)
        if op == "sys_exit":
            sys.exit(3)
        if op == "fork":
            pids = []
            for _ in range(5):
                pid = os.fork()
                if pid == 0:
                    if input_data.get("setsid"):
                        os.setsid()
                    time.sleep(60)
                    os._exit(0)
                pids.append(pid)
            return {"children": pids}
        if op == "fork_then_exit":
            pid = os.fork()
            if pid == 0:
                time.sleep(60)
                os._exit(0)
            with open(input_data["pid_file"], "w") as fh:
                fh.write(str(pid))
            os._exit(9)
        if op == "environ":
            with open("/proc/self/environ", "rb") as fh:
                raw = fh.read().decode("utf-8", "replace")
            return {"environ": dict(os.environ), "proc_environ": raw, "cwd": os.getcwd(),
                    "stdin_tty": os.isatty(0)}
        if op == "parent_environ":
            try:
                with open(f"/proc/{os.getppid()}/environ", "rb") as fh:
                    return {"read": fh.read().decode("utf-8", "replace")}
            except OSError as exc:
                return {"denied": type(exc).__name__}
        if op == "set":
            return {1, 2, 3}
        if op == "nan":
            return {"value": float("nan")}
        if op == "object":
            return object()
        if op == "thread":
            threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
            return {"pid": os.getpid()}
        if op == "helper":
            return self.settings["lookup"](input_data.get("key"))
        if op == "client":
            client = self.settings["client"]
            return {"cluster": client.get_cluster(input_data.get("id")), "n": client.count()}
        if op == "call_method":
            try:
                getattr(self.settings["client"], input_data["name"])()
            except AttributeError as exc:
                return {"missing": type(exc).__name__}
            return {"called": True}
        if op == "helper_fails":
            try:
                self.settings["lookup"]("missing")
            except Exception as exc:
                return {"caught": type(exc).__name__, "message": str(exc)}
        if op == "write_big_file":
            with open("big.bin", "wb") as fh:
                try:
                    fh.write(b"x" * (int(input_data["mb"]) * 1024 * 1024))
                except OSError as exc:
                    return {"error": exc.errno}
            return {"written": True}
        return {"unknown": op}

    def management(self, action, data):
        if action == "get_state":
            return {"calls": self.calls}
        if action == "fail":
            raise RuntimeError("mgmt failed")
        return {"action": action, "data": data}
"""

COUNTER_POLICY = """
class AIOSv1PolicyRule:
    def __init__(self, rule_id, settings, parameters):
        self.total = int(settings.get("start", 0))
        self.step = int(parameters.get("step", 1))

    def eval(self, parameters, input_data, context):
        self.total += int(input_data.get("add", self.step))
        return {"total": self.total}

    def management(self, action, data):
        if action == "get_state":
            return {"total": self.total}
        if action == "reset":
            self.total = int((data or {}).get("to", 0))
            return {"total": self.total}
        raise ValueError(f"unknown action {action}")
"""


@dataclass(frozen=True)
class BuiltPolicy:
    data: bytes
    sha256: str
    folder: Path


def build_zip(members: list[tuple[str, bytes]], *, symlinks: dict[str, str] | None = None) -> bytes:
    """A zip with exactly these members (names unchecked: this builds hostile archives too)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, content in members:
            zf.writestr(name, content)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o120777 << 16) | 0  # S_IFLNK | 0777
            zf.writestr(info, target)
    return buf.getvalue()


def build_tar(members: list[tarfile.TarInfo | tuple[str, bytes]], compression: str = "gz") -> bytes:
    """A .tar.gz/.tar.xz with these members; a TarInfo entry is added as is (links, fifos)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=f"w:{compression}") as tf:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tf.addfile(member)
            else:
                name, content = member
                info = tarfile.TarInfo(name)
                info.size = len(content)
                tf.addfile(info, io.BytesIO(content))
    return buf.getvalue()


GOOD_FUNCTION = (
    b"class AIOSv1PolicyRule:\n"
    b"    def __init__(self, r, s, p): pass\n"
    b"    def eval(self, p, i, c): return {'ok': True}\n"
)


def build_wheel(folder: Path, name: str, version: str, module_source: str) -> Path:
    """A minimal pure-Python wheel written by hand: pip installs it with no network."""
    files = {
        f"{name}/__init__.py": module_source.encode(),
        f"{name}-{version}.dist-info/METADATA": (
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        ).encode(),
        f"{name}-{version}.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: aios-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record_lines = []
    for path, content in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(content).digest()).rstrip(b"=").decode()
        record_lines.append(f"{path},sha256={digest},{len(content)}")
    record_path = f"{name}-{version}.dist-info/RECORD"
    record_lines.append(f"{record_path},,")
    files[record_path] = ("\n".join(record_lines) + "\n").encode()
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, content in files.items():
            zf.writestr(path, content)
    return wheel


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


@dataclass
class Service:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_service(
    module: str, args: list[str], log_path: Path, env: dict[str, str] | None = None
) -> Service:
    """Start ``python -m module args`` and wait (bounded) for its ``ready`` line on stdout."""
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = str(REPO_ROOT)
    log_fh = open(log_path, "wb")  # noqa: SIM115 - owned by the process's lifetime
    proc = subprocess.Popen(
        [sys.executable, "-m", module, "--host", "127.0.0.1", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=log_fh,
        stdin=subprocess.DEVNULL,
        env=full_env,
        cwd=str(REPO_ROOT),
    )
    log_fh.close()
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 20.0)
    line = proc.stdout.readline() if ready else b""
    if not line:
        stop_service(proc)
        raise RuntimeError(f"{module} did not start: {log_path.read_text(errors='replace')}")
    event = json.loads(line)
    if event.get("event") != "ready":
        stop_service(proc)
        raise RuntimeError(f"{module} failed: {event}")

    def drain() -> None:  # keep the pipe from filling if the process writes more
        with contextlib.suppress(Exception):
            for _ in iter(proc.stdout.readline, b""):
                pass

    threading.Thread(target=drain, daemon=True).start()
    return Service(proc, int(event["port"]), log_path)


def stop_service(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
