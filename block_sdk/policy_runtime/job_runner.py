"""Run one policy once and report its result: the process behind a T3 policy job on a cluster.

``python -m block_sdk.policy_runtime.job_runner --uri NAME:VERSION-TAG --input JSON ...``

The cluster driver starts it as a ``job`` workload (a child of the node agent on the local
driver, a Kubernetes Job on the kubernetes driver). The policy's code comes from the control
plane through the runtime's HTTP resolver (``--api-url``, else ``AIOS_API_URL`` or
``AIOS_CONTROL_PLANE_URL``), from a folder of archives (``--policy-dir`` / ``AIOS_POLICY_DIR``)
or from a local archive (``--archive``). By default it runs in a one-worker sandbox pool (CPU,
memory and wall-clock limits, an environment without secrets); ``--mode local`` runs it in this
process with a wall-clock watchdog.

Outcome, as one JSON document written to ``--result-path`` (default ``$AIOS_RESULT_PATH``, else
``/dev/termination-log``, Kubernetes' termination message) and as the last line of stdout:

- success, exit 0: ``{"result": <what eval returned>, "policy_rule_uri": ..., "duration_ms": ...}``
- failure, exit 1 (a ``PolicyError``: the policy raised, timed out, could not be loaded...) or
  exit 2 (bad arguments): ``{"error": {"code", "message", "details"}, "policy_rule_uri": ...}``

Kubernetes keeps at most 4096 bytes of a termination message: a larger document is not
written there, and readers fall back to the log's last JSON line (``observe.job_result``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from block_sdk.policy_runtime.cache import CACHE_DIR_ENV, PolicyCache
from block_sdk.policy_runtime.errors import PolicyError, PolicyErrorCode, PolicyIntegrityError

log = logging.getLogger("aios.policy_runtime.job_runner")

RESULT_PATH_ENV = "AIOS_RESULT_PATH"
TERMINATION_LOG = "/dev/termination-log"
TERMINATION_LIMIT = 4096  # bytes Kubernetes keeps of a termination message
DEFAULT_TIMEOUT_S = 600.0
EXIT_OK, EXIT_POLICY_ERROR, EXIT_USAGE = 0, 1, 2
MAX_MESSAGE = 2000  # an error document must fit a termination message


class UsageError(Exception):
    """Bad arguments (exit 2, reported in the error shape with code ``bad_input``)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m block_sdk.policy_runtime.job_runner",
        description="Run a policy once; write its JSON result (T3 policy job).",
    )
    parser.add_argument("--uri", required=True, help="policy rule URI name:version-release_tag")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--input", help="input_data as JSON (default null)")
    source.add_argument("--input-file", help="file holding input_data as JSON")
    parser.add_argument("--parameters", help="JSON object overriding the policy's parameters")
    parser.add_argument("--settings", help="JSON object overriding the policy's settings")
    parser.add_argument("--archive", help="a local policy archive instead of a registry")
    parser.add_argument("--sha256", help="expected sha256 of --archive")
    parser.add_argument("--class-name", help="policy class in code/function.py (with --archive)")
    parser.add_argument("--api-url", help="AIOS API (default AIOS_API_URL/AIOS_CONTROL_PLANE_URL)")
    parser.add_argument("--policy-dir", help="folder of policy archives (AIOS_POLICY_DIR)")
    parser.add_argument("--mode", choices=("sandbox", "local"), default="sandbox")
    parser.add_argument("--timeout", type=float, help=f"wall-clock seconds ({DEFAULT_TIMEOUT_S})")
    parser.add_argument("--memory-mb", type=int, help="sandbox address-space limit")
    parser.add_argument("--cache-dir", help=f"policy cache (default ${CACHE_DIR_ENV} or a tmp dir)")
    parser.add_argument("--result-path", help=f"default ${RESULT_PATH_ENV} or {TERMINATION_LOG}")
    parser.add_argument("--log-level", default=os.environ.get("AIOS_LOG_LEVEL", "WARNING"))
    return parser


def _json_arg(raw: str | None, what: str, *, want_object: bool = False) -> Any:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise UsageError(f"{what} is not valid JSON: {exc}") from None
    if want_object and not isinstance(value, dict):
        raise UsageError(f"{what} must be a JSON object")
    return value


def _input_data(args: argparse.Namespace) -> Any:
    if args.input_file:
        try:
            raw = Path(args.input_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot read --input-file: {exc}") from None
        return _json_arg(raw, "--input-file")
    return _json_arg(args.input, "--input")


def _cache(args: argparse.Namespace) -> PolicyCache:
    # Job containers run with a read-only root filesystem: the default cache lives in $TMPDIR.
    root = args.cache_dir or os.environ.get(CACHE_DIR_ENV)
    if not root:
        root = str(Path(tempfile.gettempdir()) / f"aios-policy-cache-{os.getuid()}")
    return PolicyCache(root)


def _resolver(args: argparse.Namespace, cache: PolicyCache) -> Any:
    from block_sdk.policy_runtime.evaluator import (
        DirectoryPolicyResolver,
        HttpPolicyResolver,
        InMemoryPolicyResolver,
    )

    if args.archive:
        path = Path(args.archive)
        try:
            size = path.stat().st_size
            if size > cache.limits.max_archive_bytes:
                raise PolicyError(
                    PolicyErrorCode.LOAD_ERROR,
                    f"{path} is over {cache.limits.max_archive_bytes} bytes",
                )
            data = path.read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read --archive: {exc}") from None
        resolver = InMemoryPolicyResolver()
        record = resolver.add_archive(args.uri, data, class_name=args.class_name or None)
        if args.sha256 and args.sha256 != record.sha256:
            raise PolicyIntegrityError(f"{path} hashes to {record.sha256}, not {args.sha256}")
        return resolver
    api_url = (
        args.api_url or os.environ.get("AIOS_API_URL") or os.environ.get("AIOS_CONTROL_PLANE_URL")
    )
    if api_url:
        return HttpPolicyResolver(api_url, cache=cache)
    policy_dir = args.policy_dir or os.environ.get("AIOS_POLICY_DIR")
    if policy_dir:
        return DirectoryPolicyResolver(policy_dir)
    raise UsageError(
        "no policy source: pass --archive, --api-url (or set AIOS_API_URL / "
        "AIOS_CONTROL_PLANE_URL) or --policy-dir"
    )


def run_policy(args: argparse.Namespace) -> Any:
    """Evaluate the policy once; returns its result or raises ``PolicyError``/``UsageError``."""
    from block_sdk.policy_runtime.evaluator import LocalPolicyEvaluator

    input_data = _input_data(args)
    parameters = _json_arg(args.parameters, "--parameters", want_object=True)
    settings = _json_arg(args.settings, "--settings", want_object=True)
    timeout = args.timeout or float(
        os.environ.get("AIOS_POLICY_JOB_TIMEOUT_S") or DEFAULT_TIMEOUT_S
    )
    if timeout <= 0:
        raise UsageError("--timeout must be positive")
    cache = _cache(args)
    resolver = _resolver(args, cache)
    if args.mode == "local":
        from block_sdk.policy_runtime.loader import PolicyLoader

        evaluator = LocalPolicyEvaluator(
            args.uri,
            parameters=parameters,
            settings=settings,
            mode="local",
            resolver=resolver,
            loader=PolicyLoader(cache),
        )
        return evaluator.execute_policy_rule(input_data)
    from dataclasses import replace

    from block_sdk.policy_runtime.sandbox import SandboxConfig, SandboxPool

    base = SandboxConfig.from_env()
    limits = replace(
        base.limits,
        timeout=timeout,
        cpu_seconds=timeout,
        memory_mb=args.memory_mb or base.limits.memory_mb,
    )
    pool = SandboxPool(replace(base, workers=1, max_queue=1, limits=limits), cache=cache)
    try:
        evaluator = LocalPolicyEvaluator(
            args.uri,
            parameters=parameters,
            settings=settings,
            mode="sandbox",
            resolver=resolver,
            pool=pool,
            timeout=timeout,
        )
        return evaluator.execute_policy_rule(input_data)
    finally:
        pool.close()


def _result_path(args: argparse.Namespace | None) -> str:
    given = getattr(args, "result_path", None) if args is not None else None
    return given or os.environ.get(RESULT_PATH_ENV) or TERMINATION_LOG


def _fit_termination_message(doc: dict[str, Any], text: str) -> str | None:
    """What fits Kubernetes' termination message: the document, an error without its
    details, or nothing (then readers take the log's last line, which has it whole)."""
    if len(text.encode()) <= TERMINATION_LIMIT:
        return text
    if isinstance(doc.get("error"), dict):
        error = {**doc["error"], "message": str(doc["error"].get("message", ""))[:1500]}
        error["details"] = []
        return json.dumps({**doc, "error": error}, separators=(",", ":"), default=str)
    log.warning("result_too_large_for_termination_message bytes=%s", len(text.encode()))
    return None


def _write_result(path: str, text: str | None) -> None:
    if text is None:
        return
    target = Path(path)
    if path == TERMINATION_LOG and not target.exists():
        # Not in a Kubernetes container (the kubelet mounts the file): stdout has the result.
        log.info("no_termination_log path=%s", path)
        return
    try:
        if path != TERMINATION_LOG:
            target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    except OSError as exc:
        log.warning("result_not_written path=%s error=%r", path, exc)


def emit(doc: dict[str, Any], args: argparse.Namespace | None) -> None:
    text = json.dumps(doc, separators=(",", ":"), default=str)
    path = _result_path(args)
    _write_result(path, _fit_termination_message(doc, text) if path == TERMINATION_LOG else text)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _error_doc(code: str, message: str, details: list[Any] | None, uri: str) -> dict[str, Any]:
    return {
        "error": {"code": code, "message": message[:MAX_MESSAGE], "details": details or []},
        "policy_rule_uri": uri,
    }


def _watchdog(timeout: float, args: argparse.Namespace) -> threading.Timer:
    """In ``--mode local`` nothing else bounds the policy: report a timeout and leave."""

    def expire() -> None:
        emit(
            _error_doc(
                PolicyErrorCode.TIMEOUT, f"the policy ran longer than {timeout:g}s", None, args.uri
            ),
            args,
        )
        os._exit(EXIT_POLICY_ERROR)

    timer = threading.Timer(timeout, expire)
    timer.daemon = True
    return timer


def _run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    timer = None
    if args.mode == "local":
        limit = args.timeout or float(
            os.environ.get("AIOS_POLICY_JOB_TIMEOUT_S") or DEFAULT_TIMEOUT_S
        )
        timer = _watchdog(limit, args)
        timer.start()
    try:
        result = run_policy(args)
    finally:
        if timer is not None:
            timer.cancel()
    try:
        json.dumps(result)
    except (TypeError, ValueError) as exc:  # only in --mode local: the sandbox checks it
        raise PolicyError(PolicyErrorCode.BAD_OUTPUT, f"the result is not JSON: {exc}") from None
    return {
        "result": result,
        "policy_rule_uri": args.uri,
        "duration_ms": round((time.perf_counter() - started) * 1000, 1),
    }


def main(argv: list[str] | None = None) -> int:
    args: argparse.Namespace | None = None
    uri = ""
    try:
        args = build_parser().parse_args(argv)
        uri = args.uri
        logging.basicConfig(
            level=getattr(logging, str(args.log_level).upper(), logging.WARNING),
            stream=sys.stderr,
            format="%(asctime)s %(levelname)s %(name)s %(message)s",
        )
        doc = _run(args)
    except UsageError as exc:
        emit(_error_doc(PolicyErrorCode.BAD_INPUT, str(exc), None, uri), args)
        return EXIT_USAGE
    except PolicyError as exc:
        emit(_error_doc(exc.code, exc.message, exc.details, uri), args)
        return EXIT_POLICY_ERROR
    except Exception as exc:  # a bug of ours still ends in the error shape, not a traceback
        log.exception("job_runner_failed")
        emit(_error_doc(PolicyErrorCode.EXCEPTION, f"{type(exc).__name__}: {exc}", None, uri), args)
        return EXIT_POLICY_ERROR
    emit(doc, args)
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
