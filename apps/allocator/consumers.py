"""The ad-hoc resource allocator over a websocket (reference §1.7): ``/ws/allocator/``.

Each message is either the ad-hoc request ``{adhoc: true, policy_rule_uri, clusters?, inputs,
filter?, search?, parameters?, settings?}`` (answered with the policy's own result,
``{cluster_id, node_id?, gpus?}``), or ``{"action": "dry_run", "spec": <createBlock body>}``
(answered with the dry-run decision). Errors come back as ``{"error": {code, message,
details}}``; a ``request_id`` in the message is echoed. Authentication is required.
"""

from __future__ import annotations

import logging
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from apps.allocator import services
from apps.core.errors import ApiError, error_body

log = logging.getLogger("aios.allocator.ws")

CLOSE_UNAUTHENTICATED = 4401


def handle_message(message: Any) -> dict[str, Any]:
    """One request → one reply (runs in a worker thread: it touches the database)."""
    from django.db import close_old_connections

    close_old_connections()
    request_id = message.get("request_id") if isinstance(message, dict) else None
    try:
        if isinstance(message, dict) and message.get("action") == "dry_run":
            from apps.allocator.api.views import dry_run_from_body

            reply = dry_run_from_body(message.get("spec"))
        else:
            result = services.adhoc(message)
            reply = result if isinstance(result, dict) else {"result": result}
    except ApiError as exc:
        reply = exc.as_dict()
    except Exception:
        log.exception("event=allocator_ws_error")
        reply = error_body("internal_error", "internal error; it was logged")
    if request_id is not None:
        reply = {**reply, "request_id": request_id}
    return reply


class AllocatorConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        await self.accept()

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        reply = await database_sync_to_async(handle_message)(content)
        await self.send_json(reply)

    async def receive(self, text_data=None, bytes_data=None, **kwargs) -> None:
        import json

        try:
            content = await self.decode_json(text_data or "")
        except (ValueError, TypeError, json.JSONDecodeError):
            await self.send_json(error_body("parse_error", "messages must be JSON objects"))
            return
        await self.receive_json(content)
