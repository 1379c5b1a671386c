"""Block controller configuration: defaults <- JSON document <- environment.

The JSON document is ``AIOS_BLOCK_CONTROLLER_CONFIG`` (the JSON text, or a path to a file)
or ``--config``; it uses the field names of :class:`ControllerConfig`. The environment adds
``BLOCK_ID``, ``AIOS_REDIS_URL``/``REDIS_URL``, ``AIOS_CONTROL_PLANE_URL`` and
``AIOS_BLOCK_TOKEN`` (normally the token is read from Redis, where the control plane put it).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from block_sdk.queues import DEFAULT_REDIS_URL

CONFIG_ENV = "AIOS_BLOCK_CONTROLLER_CONFIG"


class ControllerConfigError(ValueError):
    pass


@dataclass(slots=True)
class ControllerConfig:
    block_id: str = ""
    cluster_id: str = ""
    redis_url: str = DEFAULT_REDIS_URL
    api_url: str = ""  # the control plane, e.g. http://127.0.0.1:8000
    token: str = ""  # the block's service token (default: read from Redis)
    executor_http_url: str = ""  # the executor's HTTP base (stats, mgmt)
    http_host: str = "0.0.0.0"  # noqa: S104 - management is reached from the control plane
    http_port: int = 10000  # AIOS auto-scaler management port
    min_instances: int = 1
    max_instances: int = 1
    autoscaler: dict[str, Any] | None = None  # {policyRuleURI, parameters, settings}
    stability_checker: dict[str, Any] | None = None
    mapper_interval_s: float = 2.0
    autoscaler_interval_s: float = 5.0
    health_interval_s: float = 3.0
    health_timeout_s: float = 2.0
    startup_grace_s: float = 30.0  # a new instance failing checks this early is "starting"
    api_timeout_s: float = 10.0
    report_interval_s: float = 10.0  # health reports when nothing changed
    policy_timeout_s: float = 10.0
    log_level: str = "INFO"

    def validate(self) -> ControllerConfig:
        if not self.block_id:
            raise ControllerConfigError("block_id is required (BLOCK_ID)")
        if not self.api_url:
            raise ControllerConfigError("api_url is required (AIOS_CONTROL_PLANE_URL)")
        if self.min_instances < 0 or self.max_instances < max(1, self.min_instances):
            raise ControllerConfigError("need 0 <= min_instances <= max_instances, max >= 1")
        for name in (
            "mapper_interval_s",
            "autoscaler_interval_s",
            "health_interval_s",
            "health_timeout_s",
            "api_timeout_s",
            "report_interval_s",
            "policy_timeout_s",
        ):
            if getattr(self, name) <= 0:
                raise ControllerConfigError(f"{name} must be > 0")
        for name in ("autoscaler", "stability_checker"):
            rule = getattr(self, name)
            if rule is not None and (
                not isinstance(rule, dict) or not isinstance(rule.get("policyRuleURI"), str)
            ):
                raise ControllerConfigError(f"{name} must be a policy rule with policyRuleURI")
        self.api_url = self.api_url.rstrip("/")
        self.executor_http_url = self.executor_http_url.rstrip("/")
        return self

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        if doc.get("token"):
            doc["token"] = "***"  # noqa: S105 - masking, not a secret
        return doc


def _document(source: str) -> dict[str, Any]:
    text = (source or "").strip()
    if not text:
        return {}
    if not text.startswith("{"):
        text = Path(text).read_text()
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ControllerConfigError(f"controller config is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ControllerConfigError("controller config must be a JSON object")
    return doc


def load_config(source: str | None = None, env: dict[str, str] | None = None) -> ControllerConfig:
    e = dict(os.environ if env is None else env)
    doc = _document(source if source is not None else e.get(CONFIG_ENV, ""))
    known = {f.name for f in fields(ControllerConfig)}
    unknown = sorted(set(doc) - known)
    if unknown:
        raise ControllerConfigError(f"unknown controller config keys: {unknown}")
    values: dict[str, Any] = dict(doc)
    for name, var in (
        ("block_id", "BLOCK_ID"),
        ("cluster_id", "AIOS_CLUSTER_ID"),
        ("token", "AIOS_BLOCK_TOKEN"),
        ("log_level", "AIOS_LOG_LEVEL"),
    ):
        if e.get(var) and not values.get(name):
            values[name] = e[var]
    if not values.get("api_url") and e.get("AIOS_CONTROL_PLANE_URL"):
        values["api_url"] = e["AIOS_CONTROL_PLANE_URL"]
    if "redis_url" not in doc:
        values["redis_url"] = e.get("AIOS_REDIS_URL") or e.get("REDIS_URL") or DEFAULT_REDIS_URL
    types = {f.name: f.type for f in fields(ControllerConfig)}
    try:
        for name, value in list(values.items()):
            if types[name] == "int" and value is not None:
                values[name] = int(value)
            elif types[name] == "float" and value is not None:
                values[name] = float(value)
    except (TypeError, ValueError) as exc:
        raise ControllerConfigError(f"bad controller config value: {exc}") from None
    return ControllerConfig(**values).validate()
