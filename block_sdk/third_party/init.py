"""The init workload of a managed third-party system.

    python -m block_sdk.third_party.init --spec JSON


It installs/starts the system, publishes its finish data, keeps it running while the
workload lives, and tears it down on SIGTERM/SIGINT (block removal). The spec (JSON text,
`@path` to a JSON file, or the `AIOS_INIT_SPEC` environment variable):

    {"block_id": "tri-1",                                     required
     "entrypoint": "examples.triton_model.system:TritonModelSystem",   required
     "config": {...},             the system's own settings (InitContext.config)
     "block_init_data": {...}, "block_data": {...},
     "operating_mode": "create",  or "delete": only tear down what a previous run left
     "redis_url": "redis://...",  default AIOS_REDIS_URL / REDIS_URL
     "finish_file": "/path.json", also write the finish data there
     "ttl_s": 60,                 TTL of the Redis keys, refreshed every ttl_s/3 while alive
     "workdir": "/path"}          default: a temporary folder removed at exit

The system class (the AIOS init-container shape, minus Kubernetes) is
`cls(context: InitContext)` with `begin()`, `main()`, `finish()`: each returns `(ok, msg)`
/ `(ok, dict)` or a plain value; `finish()` returns the finish data dict. Optional:
`is_alive() -> bool` (checked every refresh; False ends the workload with `failed` so the
node agent restarts it), `teardown()` (stop everything; also run in `delete` mode).

Exit codes: 0 after a clean teardown, 1 when a stage failed or the system died, 2 for a bad
spec. The status key says which stage failed and why.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from block_sdk.instance.pipeline import load_class
from block_sdk.metrics import configure_logging
from block_sdk.third_party.sdk import DEFAULT_TTL_S, InitContext, default_redis_url

log = logging.getLogger("block_sdk.third_party.init")

SPEC_ENV = "AIOS_INIT_SPEC"


class SpecError(ValueError):
    """The init spec is unusable."""


class _Terminate(BaseException):
    """Raised from the signal handler to abandon a stage that is still starting the system.

    A BaseException so that a stage's `except Exception` does not swallow block removal."""


class StageFailed(RuntimeError):
    def __init__(self, stage: str, message: str) -> None:
        super().__init__(f"{stage}: {message}")
        self.stage = stage
        self.reason = message


def load_spec(text: str | None) -> dict[str, Any]:
    text = text if text is not None else os.environ.get(SPEC_ENV, "")
    if not text or not text.strip():
        raise SpecError(f"no spec: pass --spec JSON (or @file), or set {SPEC_ENV}")
    text = text.strip()
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text()
        except OSError as exc:
            raise SpecError(f"cannot read spec file: {exc}") from None
    try:
        spec = json.loads(text)
    except ValueError as exc:
        raise SpecError(f"spec is not JSON: {exc}") from None
    if not isinstance(spec, dict):
        raise SpecError("spec must be a JSON object")
    for key in ("block_id", "entrypoint"):
        if not isinstance(spec.get(key), str) or not spec[key]:
            raise SpecError(f"spec.{key} is required")
    if spec.get("operating_mode", "create") not in ("create", "delete"):
        raise SpecError("spec.operating_mode must be 'create' or 'delete'")
    for key in ("config", "block_init_data", "block_data"):
        if not isinstance(spec.get(key, {}), dict):
            raise SpecError(f"spec.{key} must be an object")
    ttl = spec.get("ttl_s", DEFAULT_TTL_S)
    if not isinstance(ttl, int | float) or ttl < 3:
        raise SpecError("spec.ttl_s must be a number >= 3")
    return spec


def init_spec(
    block_id: str,
    container_registry_info: dict[str, Any],
    *,
    block_init_data: dict[str, Any] | None = None,
    block_data: dict[str, Any] | None = None,
    redis_url: str | None = None,
    ttl_s: float = DEFAULT_TTL_S,
    finish_file: str | None = None,
    operating_mode: str = "create",
) -> dict[str, Any] | None:
    """The init-workload spec for a block, from its component's `containerRegistryInfo`;
    None when the component declares no `initContainer` (no managed third-party system).

    The entry point is `initContainer.containerImageMetadata.entrypoint` and the system's
    configuration `initContainer.containerImageMetadata.config`.
    """
    init = (container_registry_info or {}).get("initContainer")
    if not isinstance(init, dict) or not init:
        return None
    meta = init.get("containerImageMetadata") or {}
    entrypoint = meta.get("entrypoint")
    if not isinstance(entrypoint, str) or ":" not in entrypoint:
        raise SpecError(
            "initContainer.containerImageMetadata.entrypoint ('module.path:ClassName') is "
            "required to run a managed third-party system"
        )
    spec: dict[str, Any] = {
        "block_id": block_id,
        "entrypoint": entrypoint,
        "config": dict(meta.get("config") or {}),
        "block_init_data": dict(block_init_data or {}),
        "block_data": dict(block_data or {}),
        "operating_mode": operating_mode,
        "ttl_s": ttl_s,
    }
    if redis_url:
        spec["redis_url"] = redis_url
    if finish_file:
        spec["finish_file"] = finish_file
    return spec


def init_argv(spec: dict[str, Any], python: str | None = None) -> list[str]:
    """The command line that runs the init workload for `spec`."""
    return [
        python or sys.executable,
        "-m",
        "block_sdk.third_party.init",
        "--spec",
        json.dumps(spec),
    ]


def _stage_result(stage: str, result: Any) -> Any:
    """Accept `(ok, payload)` (AIOS) or a plain value; raise StageFailed on `(False, ...)`."""
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], bool):
        ok, payload = result
        if not ok:
            raise StageFailed(stage, str(payload))
        return payload
    return result


class InitRunner:
    """Drives one system class through its stages and supervises it."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.block_id = spec["block_id"]
        self.mode = spec.get("operating_mode", "create")
        self.ttl_s = float(spec.get("ttl_s", DEFAULT_TTL_S))
        self._own_workdir = not spec.get("workdir")
        workdir = (
            Path(spec["workdir"])
            if spec.get("workdir")
            else Path(tempfile.mkdtemp(prefix=f"aios-init-{self.block_id}-"))
        )
        workdir.mkdir(parents=True, exist_ok=True)
        self.context = InitContext(
            block_id=self.block_id,
            config=dict(spec.get("config") or {}),
            block_init_data=dict(spec.get("block_init_data") or {}),
            block_data=dict(spec.get("block_data") or {}),
            operating_mode=self.mode,
            redis_url=spec.get("redis_url") or default_redis_url(),
            finish_file=spec.get("finish_file"),
            ttl_s=self.ttl_s,
            workdir=workdir,
        )
        self.stop = threading.Event()
        self._in_stage = False
        self.system: Any = None

    # -- signals -----------------------------------------------------------------------------
    def _on_signal(self, signum: int, _frame: Any) -> None:
        log.info("termination requested", extra={"signal": signum})
        self.stop.set()
        if self._in_stage:
            # The system is still starting (a stage may wait minutes for readiness); block
            # removal must not wait for that.
            self._in_stage = False
            raise _Terminate

    def install_signals(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)

    # -- stages ------------------------------------------------------------------------------
    def _run_stage(self, stage: str) -> Any:
        fn = getattr(self.system, stage, None)
        if fn is None:
            return None
        self.context.status("begin" if stage == "begin" else "main", f"{stage} running")
        self._in_stage = True
        try:
            return _stage_result(stage, fn())
        finally:
            self._in_stage = False

    def _teardown(self) -> None:
        ctx = self.context
        ctx.status("stopping", "tearing the system down")
        ctx.clear()
        fn = getattr(self.system, "teardown", None) or getattr(self.system, "stop", None)
        if fn is not None:
            try:
                fn()
            except Exception:
                log.exception("teardown failed")

    def run(self) -> int:
        ctx = self.context
        cls = load_class(self.spec["entrypoint"])
        try:
            self.system = cls(ctx)
            if self.mode == "delete":
                self._teardown()
                ctx.status("stopped", "deleted")
                return 0
            self._run_stage("begin")
            self._run_stage("main")
            self._in_stage = True
            try:
                data = (
                    _stage_result("finish", self.system.finish())
                    if hasattr(self.system, "finish")
                    else {}
                )
            finally:
                self._in_stage = False
            if data is None:
                data = {}
            if not isinstance(data, dict):
                raise StageFailed(
                    "finish", f"finish() must return a dict, got {type(data).__name__}"
                )
            if self.stop.is_set():
                raise _Terminate
            ctx.finish(data)
        except _Terminate:
            self._teardown()
            ctx.status("stopped", "terminated during start-up")
            return 0
        except StageFailed as exc:
            log.error("init stage failed", extra={"stage": exc.stage, "reason": exc.reason})
            self._teardown()
            ctx.status("failed", str(exc), failed_stage=exc.stage)
            return 1
        except Exception as exc:
            log.exception("init workload crashed")
            self._teardown()
            ctx.status("failed", f"{type(exc).__name__}: {exc}")
            return 1

        # Supervise: keep the keys alive, notice a dead system, wait for SIGTERM.
        interval = max(0.5, self.ttl_s / 3)
        is_alive = getattr(self.system, "is_alive", None)
        while not self.stop.wait(interval):
            try:
                ctx.refresh()
            except Exception as exc:
                log.warning("refresh failed", extra={"error": str(exc)})
            if callable(is_alive):
                try:
                    alive = bool(is_alive())
                except Exception as exc:
                    alive = False
                    log.warning("is_alive raised", extra={"error": str(exc)})
                if not alive:
                    log.error("third-party system died")
                    self._teardown()
                    ctx.status("failed", "the third-party system stopped running")
                    return 1
        self._teardown()
        ctx.status("stopped", "block removed")
        log.info("init workload stopped")
        return 0

    def close(self) -> None:
        self.context.close()
        if self._own_workdir and self.context.workdir is not None:
            shutil.rmtree(self.context.workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m block_sdk.third_party.init", description=__doc__)
    p.add_argument("--spec", help=f"JSON text or @file (default: ${SPEC_ENV})")
    p.add_argument("--log-level", default=os.environ.get("AIOS_LOG_LEVEL", "INFO"))
    a = p.parse_args(argv)
    try:
        spec = load_spec(a.spec)
    except SpecError as exc:
        print(f"init spec error: {exc}", file=sys.stderr)
        return 2
    configure_logging({"block_id": spec["block_id"], "service": "third_party_init"}, a.log_level)
    runner = InitRunner(spec)
    runner.install_signals()
    try:
        return runner.run()
    except (ImportError, AttributeError, ValueError, TypeError) as exc:
        # The entry point itself is unusable: say so in the status key, too.
        runner.context.status("failed", f"cannot load {spec['entrypoint']}: {exc}")
        print(f"init entrypoint error: {exc}", file=sys.stderr)
        return 2
    finally:
        runner.close()


if __name__ == "__main__":
    sys.exit(main())
