"""Start and stop an NVIDIA Triton Inference Server process for a model repository.

The `tritonserver` binary comes from the `nvidia-pytriton` wheel (it runs on CPU; on a GPU
machine it uses the GPUs it is given) unless `binary=` or `AIOS_TRITONSERVER` names another.
The wheel's python backend needs three things this module arranges:

* the backend stub built for *this* interpreter's minor version, placed next to
  `libtriton_python.so` (the wheel keeps one stub per Python version apart; we assemble a
  backends folder of symlinks, shared by every server of the same interpreter);
* this interpreter's shared `libpython3.X.so` on `LD_LIBRARY_PATH` (the stub links it; a
  pyenv or custom-built Python keeps it in `sysconfig`'s LIBDIR, which the loader does not
  search), plus the wheel's bundled libraries;
* this interpreter's `bin/` first on `PATH`, so the embedded interpreter finds the virtualenv
  (numpy, the model's imports).

`TritonServer` picks free ports, waits for `/v2/health/ready` with a timeout (reporting the
server's own log when it dies during start-up), and `stop()` ends the whole process group
(server and backend stubs), escalating to SIGKILL, so nothing outlives it.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("block_sdk.triton.server")

BINARY_ENV = "AIOS_TRITONSERVER"
READY_POLL_S = 0.1
# A port picked as free can be taken before Triton binds it; start again on fresh ports.
PORT_RETRIES = 3
LOG_TAIL_CHARS = 4000


class TritonError(RuntimeError):
    """Base class of the errors of this module."""


class TritonNotAvailable(TritonError):
    """No usable `tritonserver` binary on this machine (the reason says what is missing)."""


class TritonStartError(TritonError):
    """The server did not become ready; `log_tail` holds the end of its log."""

    def __init__(self, message: str, log_tail: str = "") -> None:
        super().__init__(
            f"{message}\n--- tritonserver log (tail) ---\n{log_tail}" if log_tail else message
        )
        self.log_tail = log_tail


@dataclass(frozen=True, slots=True)
class TritonDistribution:
    """Where the pieces of one Triton installation are."""

    binary: Path
    python_backend: Path | None  # folder holding libtriton_python.so (None: no python backend)
    stub: Path | None  # triton_python_backend_stub matching this interpreter
    lib_dirs: tuple[Path, ...] = field(default_factory=tuple)  # bundled shared libraries
    other_backends: tuple[Path, ...] = field(default_factory=tuple)  # e.g. onnxruntime, if any


def _pytriton_root() -> Path | None:
    try:
        import pytriton  # type: ignore[import-untyped]
    except ImportError:
        return None
    return Path(pytriton.__file__).resolve().parent


def find_distribution(binary: str | os.PathLike[str] | None = None) -> TritonDistribution:
    """Locate `tritonserver` and its python backend; raise `TritonNotAvailable` saying why."""
    explicit = binary or os.environ.get(BINARY_ENV)
    root = _pytriton_root()
    dist_dir = root / "tritonserver" if root else None
    if explicit:
        bin_path = Path(explicit)
        if not bin_path.is_file():
            raise TritonNotAvailable(f"tritonserver binary {bin_path} does not exist")
        base = bin_path.resolve().parent.parent
        backends_dir = base / "backends"
    elif dist_dir and (dist_dir / "bin" / "tritonserver").is_file():
        bin_path = dist_dir / "bin" / "tritonserver"
        backends_dir = dist_dir / "backends"
    else:
        found = shutil.which("tritonserver")
        if not found:
            raise TritonNotAvailable(
                "no tritonserver binary: install the nvidia-pytriton wheel "
                f"(pip install nvidia-pytriton) or set {BINARY_ENV}"
            )
        bin_path = Path(found)
        backends_dir = bin_path.resolve().parent.parent / "backends"
    if not os.access(bin_path, os.X_OK):
        raise TritonNotAvailable(f"{bin_path} is not executable")

    python_backend = backends_dir / "python"
    if not (python_backend / "libtriton_python.so").is_file():
        python_backend = None
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = None
    candidates = []
    if dist_dir:
        candidates.append(
            dist_dir / "python_backend_stubs" / version / "triton_python_backend_stub"
        )
    if python_backend:
        candidates.append(python_backend / "triton_python_backend_stub")
    for candidate in candidates:
        if candidate.is_file():
            stub = candidate
            break
    lib_dirs: list[Path] = []
    if root and (root.parent / "nvidia_pytriton.libs").is_dir():
        lib_dirs.append(root.parent / "nvidia_pytriton.libs")
    if dist_dir and (dist_dir / "external_libs").is_dir():  # editable installs of pytriton
        lib_dirs.append(dist_dir / "external_libs")
    others = (
        tuple(p for p in sorted(backends_dir.iterdir()) if p.is_dir() and p.name != "python")
        if backends_dir.is_dir()
        else ()
    )
    return TritonDistribution(bin_path, python_backend, stub, tuple(lib_dirs), others)


def tritonserver_available() -> tuple[bool, str]:
    """(True, binary path) or (False, why not): for skip conditions and health pages."""
    try:
        return True, str(find_distribution().binary)
    except TritonNotAvailable as exc:
        return False, str(exc)


def python_library_dir() -> Path | None:
    """The folder holding this interpreter's shared libpython (None for a static build).

    pyenv and custom builds keep it in `sysconfig`'s LIBDIR (e.g.
    /root/.pyenv/versions/3.11.7/lib), which the dynamic loader does not search; a venv made
    from /usr/bin/python3.11 finds the distribution's copy in the standard paths.
    """
    libdir = sysconfig.get_config_var("LIBDIR")
    ldlibrary = sysconfig.get_config_var("LDLIBRARY") or ""
    if not libdir:
        return None
    path = Path(libdir)
    if ldlibrary.endswith(".a"):
        return None
    if (path / ldlibrary).exists() or any(path.glob("libpython3*.so*")):
        return path
    multiarch = sysconfig.get_config_var("MULTIARCH")
    if multiarch and any((path / multiarch).glob("libpython3*.so*")):
        return path / multiarch
    return None


def server_environment(
    dist: TritonDistribution, base: dict[str, str] | None = None
) -> dict[str, str]:
    """Environment for the server process: library path, interpreter on PATH."""
    env = dict(os.environ if base is None else base)
    lib_path = []
    pylib = python_library_dir()
    if pylib is not None:
        # First: the stub must load the libpython of the interpreter whose packages it uses.
        lib_path.append(str(pylib))
    lib_path += [str(p) for p in dist.lib_dirs]
    if env.get("LD_LIBRARY_PATH"):
        lib_path.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(lib_path)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "/usr/bin:/bin")])
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def prepare_backends(dist: TritonDistribution, cache_root: Path | None = None) -> Path:
    """A backends folder where the python backend sits beside the stub of this interpreter.

    Made of symlinks, keyed by the distribution and interpreter, created atomically once and
    shared by every server started from this interpreter.
    """
    cache_root = cache_root or Path(tempfile.gettempdir()) / "aios-triton-backends"
    key = hashlib.sha256(
        json.dumps(
            [str(dist.binary), str(dist.python_backend), str(dist.stub), sys.version]
        ).encode()
    ).hexdigest()[:16]
    target = cache_root / key
    if (target / "python" / "triton_python_backend_stub").exists() or (
        target.is_dir() and dist.python_backend is None
    ):
        return target
    cache_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=cache_root))
    if dist.python_backend is not None:
        py = staging / "python"
        py.mkdir()
        for item in dist.python_backend.iterdir():
            if item.name != "__pycache__" and item.name != "triton_python_backend_stub":
                (py / item.name).symlink_to(item.resolve())
        if dist.stub is None:
            shutil.rmtree(staging, ignore_errors=True)
            raise TritonNotAvailable(
                f"no python backend stub for Python {sys.version_info.major}."
                f"{sys.version_info.minor} in the Triton distribution at {dist.binary}"
            )
        (py / "triton_python_backend_stub").symlink_to(dist.stub.resolve())
    for other in dist.other_backends:
        (staging / other.name).symlink_to(other.resolve())
    try:
        staging.rename(target)
    except OSError:
        # Another process won the race; its folder is equivalent.
        shutil.rmtree(staging, ignore_errors=True)
    return target


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _pdeathsig_hook() -> Any:
    """A pre-exec hook asking the kernel to SIGTERM the child when its parent dies, so a
    server is not orphaned when the process that started it is SIGKILLed.

    libc is loaded here, in the parent: the hook itself runs between fork and exec, where only
    async-signal-safe work belongs. (The signal follows the *thread* that started the server:
    start servers from a long-lived thread, normally the main one.)
    """
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return None
    libc = ctypes.CDLL(libc_name, use_errno=True)
    prctl = libc.prctl
    pr_set_pdeathsig = 1
    sigterm = int(signal.SIGTERM)

    def hook() -> None:
        prctl(pr_set_pdeathsig, sigterm)

    return hook


def _group_members(pgid: int) -> list[int]:
    """Pids whose process group is `pgid` (the server and its backend stubs)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Field 5 (pgrp) follows the parenthesised command name, which may hold spaces.
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            members.append(int(entry.name))
    return members


class TritonServer:
    """One `tritonserver` process serving `model_repository`.

    Ports given as 0 are picked free; -1 disables that endpoint (metrics only). URLs are in
    tritonclient's form (`host:port`, no scheme). Use as a context manager, or call
    `start()` / `stop()`.
    """

    def __init__(
        self,
        model_repository: str | os.PathLike[str],
        *,
        host: str = "127.0.0.1",
        http_port: int = 0,
        grpc_port: int = 0,
        metrics_port: int = 0,
        startup_timeout_s: float = 60.0,
        exit_timeout_s: int = 5,
        log_verbose: int = 0,
        models: list[str] | None = None,
        extra_args: list[str] | None = None,
        binary: str | os.PathLike[str] | None = None,
        env: dict[str, str] | None = None,
        workdir: str | os.PathLike[str] | None = None,
        die_with_parent: bool = True,
    ) -> None:
        self.model_repository = Path(model_repository).resolve()
        self.host = host
        self.requested_ports = {"http": http_port, "grpc": grpc_port, "metrics": metrics_port}
        self.ports: dict[str, int] = {}
        self.startup_timeout_s = startup_timeout_s
        self.exit_timeout_s = exit_timeout_s
        self.log_verbose = log_verbose
        self.models = models
        self.extra_args = list(extra_args or [])
        self.binary = binary
        self.base_env = env
        self.die_with_parent = die_with_parent
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else None
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None
        self._log_file: Any = None
        self._last_log = ""
        self._lock = threading.Lock()
        # Unique per server: python-backend shared-memory regions of two servers must differ.
        self.shm_prefix = f"aios_triton_{os.getpid()}_{uuid.uuid4().hex[:8]}_"

    # -- addresses -------------------------------------------------------------------------
    def _url(self, kind: str) -> str:
        port = self.ports.get(kind)
        if not port:
            raise TritonError(f"the {kind} endpoint is not running")
        return f"{self._bind_host()}:{port}"

    @property
    def http_url(self) -> str:
        return self._url("http")

    @property
    def grpc_url(self) -> str:
        return self._url("grpc")

    @property
    def metrics_url(self) -> str:
        return self._url("metrics")

    def endpoints(self) -> dict[str, str]:
        """What a third-party init workload publishes with `finish()`."""
        out = {"http_url": self.http_url, "grpc_url": self.grpc_url, "inference_url": self.http_url}
        if self.ports.get("metrics"):
            out["metrics_url"] = f"http://{self.metrics_url}/metrics"
        return out

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    # -- lifecycle -------------------------------------------------------------------------
    def _argv(self, dist: TritonDistribution, backends: Path) -> list[str]:
        argv = [
            str(dist.binary),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={backends}",
            f"--exit-timeout-secs={self.exit_timeout_s}",
            f"--log-verbose={self.log_verbose}",
            "--allow-gpu-metrics=false",  # DCGM probing only slows start-up where there is no GPU
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
            f"--http-address={self.host}",
            f"--grpc-address={self.host}",
        ]
        for kind in ("http", "grpc"):
            argv.append(f"--{kind}-port={self.ports[kind]}")
        if self.ports.get("metrics"):
            argv += [f"--metrics-port={self.ports['metrics']}", f"--metrics-address={self.host}"]
        else:
            argv.append("--allow-metrics=false")
        if self.models is not None:
            argv.append("--model-control-mode=explicit")
            argv += [f"--load-model={m}" for m in self.models]
        return argv + self.extra_args

    def _bind_host(self) -> str:
        return "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host  # noqa: S104

    def _pick_ports(self) -> None:
        self.ports = {}
        for kind, port in self.requested_ports.items():
            if port < 0:
                if kind != "metrics":
                    raise ValueError(f"{kind} endpoint cannot be disabled")
                self.ports[kind] = 0
            else:
                self.ports[kind] = port or free_port(self._bind_host())

    def start(self) -> TritonServer:
        """Start the server and wait until it is ready (raises `TritonStartError`)."""
        with self._lock:
            if self.is_alive():
                raise TritonError(f"tritonserver already running (pid {self.pid})")
            if not self.model_repository.is_dir():
                raise TritonStartError(f"model repository {self.model_repository} is not a folder")
            dist = find_distribution(self.binary)
            backends = prepare_backends(dist)
            env = server_environment(dist, self.base_env)
            if self.workdir is None:
                self.workdir = Path(tempfile.mkdtemp(prefix="aios-triton-"))
            self.workdir.mkdir(parents=True, exist_ok=True)
            fixed = all(p != 0 for p in self.requested_ports.values())
            attempts = 1 if fixed else PORT_RETRIES
            for attempt in range(1, attempts + 1):
                self._pick_ports()
                self._spawn(self._argv(dist, backends), env, attempt)
                try:
                    self._wait_ready(self.startup_timeout_s)
                    break
                except TritonStartError as exc:
                    self._kill_group(grace_s=2.0)
                    if attempt < attempts and "address already in use" in exc.log_tail.lower():
                        log.warning("triton port taken, retrying", extra={"attempt": attempt})
                        continue
                    self._release_files()
                    raise
            log.info(
                "tritonserver ready",
                extra={
                    "pid": self.pid,
                    "ports": self.ports,
                    "repository": str(self.model_repository),
                },
            )
            return self

    def _spawn(self, argv: list[str], env: dict[str, str], attempt: int) -> None:
        assert self.workdir is not None
        self.log_path = self.workdir / f"tritonserver-{attempt}.log"
        if self._log_file:
            self._log_file.close()
        self._log_file = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        # A file, not a pipe: nobody has to drain it, so a chatty server never blocks.
        self.proc = subprocess.Popen(
            argv,
            cwd=self.workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() reaches the stubs too
            preexec_fn=_pdeathsig_hook() if self.die_with_parent else None,
        )
        log.info("tritonserver starting", extra={"pid": self.proc.pid, "argv": argv})

    def is_ready(self, timeout_s: float = 1.0) -> bool:
        if not self.ports.get("http"):
            return False
        try:
            url = f"http://{self.http_url}/v2/health/ready"
            with urllib.request.urlopen(url, timeout=timeout_s) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                code = self.proc.returncode if self.proc else None
                raise TritonStartError(
                    f"tritonserver exited with code {code} before becoming ready "
                    f"(repository {self.model_repository})",
                    self.failure_summary(),
                )
            if self.is_ready(timeout_s=min(1.0, max(0.1, deadline - time.monotonic()))):
                return
            time.sleep(READY_POLL_S)
        raise TritonStartError(
            f"tritonserver not ready within {timeout_s:.0f}s (repository {self.model_repository})",
            self.failure_summary(),
        )

    def is_alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def pids(self) -> list[int]:
        """The server and its backend stubs (its process group)."""
        return _group_members(self.proc.pid) if self.proc else []

    def logs(self, tail_chars: int = LOG_TAIL_CHARS) -> str:
        if self.log_path and self.log_path.exists():
            with contextlib.suppress(OSError):
                data = self.log_path.read_bytes()[-tail_chars:]
                return data.decode("utf-8", "replace")
        return self._last_log[-tail_chars:]

    def failure_summary(self, max_errors: int = 20, tail_chars: int = 1500) -> str:
        """Triton's error lines (glog `E...` lines and `error:` lines) plus the log's end:
        the reason a model failed to load sits before pages of status tables."""
        text = self.logs(tail_chars=1_000_000)
        errors = [
            line
            for line in text.splitlines()
            if (line[:1] == "E" and line[1:5].isdigit()) or "error" in line.lower()[:80]
        ]
        summary = "\n".join(errors[-max_errors:])
        tail = text[-tail_chars:]
        return f"{summary}\n...\n{tail}" if summary else tail

    def _kill_group(self, grace_s: float) -> int | None:
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                # SIGTERM to the server only: it unloads models and stops its stubs itself.
                proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=grace_s)
        # Whatever is left in the group (a stuck server, an orphaned stub) is killed.
        deadline = time.monotonic() + 5.0
        while True:
            members = _group_members(proc.pid)
            if not members:
                break
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                log.error("triton processes survived SIGKILL", extra={"pids": members})
                break
            time.sleep(0.05)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5.0)
        return proc.returncode

    def _release_files(self) -> None:
        """Keep the log tail in memory, close the log, remove a work folder we created."""
        if self.log_path is not None:
            self._last_log = self.logs()
            self.log_path = None
        if self._log_file:
            self._log_file.close()
            self._log_file = None
        if self._own_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def stop(self, timeout_s: float | None = None) -> int | None:
        """Stop the server and every process of its group; returns its exit code."""
        with self._lock:
            if self.proc is None:
                return None
            grace = timeout_s if timeout_s is not None else self.exit_timeout_s + 5
            code = self._kill_group(grace)
            self._release_files()
            log.info("tritonserver stopped", extra={"pid": self.proc.pid, "exit_code": code})
            return code

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """`python -m block_sdk.triton.server --model-repository DIR`: serve until SIGTERM."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m block_sdk.triton.server", description=main.__doc__)
    p.add_argument("--model-repository", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--http-port", type=int, default=0)
    p.add_argument("--grpc-port", type=int, default=0)
    p.add_argument("--metrics-port", type=int, default=0)
    p.add_argument("--startup-timeout-s", type=float, default=60.0)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server = TritonServer(
        a.model_repository,
        host=a.host,
        http_port=a.http_port,
        grpc_port=a.grpc_port,
        metrics_port=a.metrics_port,
        startup_timeout_s=a.startup_timeout_s,
    )
    try:
        server.start()
    except TritonError as exc:
        print(f"triton start error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(server.endpoints()), flush=True)
    try:
        while not stop.wait(1.0):
            if not server.is_alive():
                print("tritonserver exited", file=sys.stderr)
                return 1
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
