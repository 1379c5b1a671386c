"""The agent's small HTTP endpoint: ``GET /health`` (JSON) and ``GET /metrics`` (Prometheus).

Health means "the sampling loop is alive", not "the control plane answers": restarting the
pod would not bring a control plane back, and the agent keeps sampling into its buffer.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger("aios.node_metrics.health")


class HealthServer:
    """Serves ``snapshot()`` on a daemon thread; ``close()`` stops it."""

    def __init__(
        self,
        host: str,
        port: int,
        snapshot: Callable[[], dict[str, Any]],
        metrics: Callable[[], str],
    ) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path in ("/health", "/healthz", "/"):
                    doc = snapshot()
                    body = json.dumps(doc).encode()
                    status = 200 if doc.get("healthy") else 503
                    content_type = "application/json"
                elif path == "/metrics":
                    body = metrics().encode()
                    status = 200
                    content_type = "text/plain; version=0.0.4; charset=utf-8"
                else:
                    body = b'{"error": {"code": "not_found", "message": "no such path"}}'
                    status = 404
                    content_type = "application/json"
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("health_request", extra={"line": format % args})

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.server.timeout = 1.0
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(
            target=self.server.serve_forever,
            kwargs={"poll_interval": 0.5},
            name="node-metrics-health",
            daemon=True,
        )

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)
