"""One push of buffered samples to ``POST /api/v1/metrics/nodes/<id>/report/``.

The outcome tells the agent what to do with the batch: ``delivered`` (drop it from the
buffer), ``rejected`` (the control plane refused its content for good: drop it, log why) or
``retry`` (network error, timeout, 5xx, 401/403/404/429: keep it and back off; an operator
may fix the token or register the node meanwhile).
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from typing import Any

import httpx

log = logging.getLogger("aios.node_metrics.push")

DELIVERED, REJECTED, RETRY = "delivered", "rejected", "retry"
# Statuses that no resend of the same batch can fix.
_PERMANENT = {400, 413, 415, 422}


@dataclass
class PushOutcome:
    kind: str
    status: int | None = None
    message: str = ""


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("message", ""))[:300]
    return str(body)[:200]


class Pusher:
    """Holds one HTTP client (keep-alive) with a bounded timeout for every request."""

    def __init__(self, url_template: str, timeout_s: float) -> None:
        self.url_template = url_template
        self.client = httpx.Client(
            timeout=httpx.Timeout(timeout_s),
            headers={"User-Agent": "aios-node-metrics/1"},
            follow_redirects=False,
        )

    def push(
        self,
        node_id: str,
        cluster_id: str,
        samples: list[dict[str, Any]],
        token: str,
        agent: dict[str, Any],
    ) -> PushOutcome:
        body: dict[str, Any] = {"node_id": node_id, "samples": samples, "agent": agent}
        if cluster_id:
            body["cluster_id"] = cluster_id
        headers = {"Authorization": f"Token {token}"} if token else {}
        url = self.url_template.format(node_id=node_id)
        try:
            response = self.client.post(url, json=body, headers=headers)
        except httpx.HTTPError as exc:
            return PushOutcome(RETRY, None, f"{type(exc).__name__}: {exc}"[:300])
        if 200 <= response.status_code < 300:
            return PushOutcome(DELIVERED, response.status_code)
        kind = REJECTED if response.status_code in _PERMANENT else RETRY
        return PushOutcome(kind, response.status_code, _error_message(response))

    def close(self) -> None:
        self.client.close()


def agent_info(buffered: int, dropped: int) -> dict[str, Any]:
    """Who is reporting (for the control plane's logs)."""
    return {
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "buffered": buffered,
        "dropped": dropped,
    }
