"""The Triton server runner: finds the wheel's binary, sets up the python backend for this
interpreter, starts on free ports, reports start-up failures with Triton's own log, and
stops leaving no process behind."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from pathlib import Path

import psutil
import pytest

from block_sdk.triton.server import (
    TritonNotAvailable,
    TritonServer,
    TritonStartError,
    find_distribution,
    python_library_dir,
    server_environment,
)
from tests.block_sdk.triton.helpers import X, direct, requires_triton


def test_python_library_dir_holds_this_interpreters_libpython() -> None:
    libdir = python_library_dir()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert libdir is not None
    assert list(libdir.glob(f"libpython{version}*.so*")), f"no libpython{version} in {libdir}"


@requires_triton
def test_server_environment_puts_libpython_first_and_the_venv_on_path() -> None:
    dist = find_distribution()
    env = server_environment(dist, {"PATH": "/usr/bin", "LD_LIBRARY_PATH": "/opt/x"})
    parts = env["LD_LIBRARY_PATH"].split(":")
    assert parts[0] == str(python_library_dir())
    assert parts[-1] == "/opt/x"
    assert env["PATH"].split(":")[0] == str(Path(sys.executable).parent)


@requires_triton
def test_stub_links_against_this_interpreters_libpython() -> None:
    dist = find_distribution()
    assert dist.stub is not None and dist.python_backend is not None
    env = server_environment(dist)
    out = subprocess.run(
        ["ldd", str(dist.stub)], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert "not found" not in out, out
    libpython = next(line for line in out.splitlines() if "libpython" in line)
    assert str(python_library_dir()) in libpython


def test_an_explicit_missing_binary_is_reported() -> None:
    with pytest.raises(TritonNotAvailable, match="does not exist"):
        find_distribution("/nonexistent/bin/tritonserver")


@requires_triton
def test_start_serve_stop_leaves_no_process(model_repository: Path) -> None:
    server = TritonServer(model_repository)
    server.start()
    try:
        pids = server.pids()
        names = {psutil.Process(p).name() for p in pids}
        assert "tritonserver" in names
        assert any(n.startswith("triton_python") for n in names)  # the backend stub
        for kind in ("http", "grpc"):
            assert direct(getattr(server, f"{kind}_url"), kind, X)["label"] == [1, 2, 2]
        with urllib.request.urlopen(server.endpoints()["metrics_url"], timeout=5) as resp:
            assert b"nv_inference_count" in resp.read()
    finally:
        code = server.stop()
    assert code == 0
    assert not [p for p in pids if psutil.pid_exists(p)]
    assert server.stop() == 0  # idempotent


@requires_triton
def test_a_broken_model_fails_start_with_tritons_reason(tmp_path: Path) -> None:
    model = tmp_path / "broken" / "1"
    model.mkdir(parents=True)
    (tmp_path / "broken" / "config.pbtxt").write_text(
        'name: "broken"\nbackend: "python"\nmax_batch_size: 0\n'
        'input [{ name: "x" data_type: TYPE_FP32 dims: [1] }]\n'
        'output [{ name: "y" data_type: TYPE_FP32 dims: [1] }]\n'
    )
    (model / "model.py").write_text("raise RuntimeError('weights are missing')\n")
    server = TritonServer(tmp_path, startup_timeout_s=60)
    with pytest.raises(TritonStartError) as err:
        server.start()
    assert "weights are missing" in str(err.value)
    assert not server.is_alive()
    assert not server.pids()


def test_a_missing_repository_is_refused_before_starting(tmp_path: Path) -> None:
    with pytest.raises(TritonStartError, match="is not a folder"):
        TritonServer(tmp_path / "nope").start()
