"""The block controller's client of the control plane (asyncio, every call time-bounded).

Calls are made with the block's service token (``Authorization: Bearer aios-blk-...``), which
only lets the controller read, scale, replace instances of and report on its own block.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import aiohttp

log = logging.getLogger("block_sdk.block_controller.client")


class ControlPlaneError(RuntimeError):
    """The control plane refused a call (4xx) or could not be reached (status 0) in time."""

    def __init__(self, message: str, status: int = 0, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body

    @property
    def code(self) -> str:
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            return str(self.body["error"].get("code", ""))
        return ""


class ControlPlaneClient:
    def __init__(self, api_url: str, block_id: str, token: str, timeout_s: float = 10.0) -> None:
        self.api_url = api_url.rstrip("/")
        self.block_id = block_id
        self.token = token
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    @property
    def base(self) -> str:
        return f"{self.api_url}/api/v1/blocks/{self.block_id}"

    async def _sess(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
            self._session = aiohttp.ClientSession(timeout=self.timeout, headers=headers)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(self, method: str, url: str, body: Any = None) -> Any:
        session = await self._sess()
        try:
            async with session.request(method, url, json=body) as resp:
                text = await resp.text()
                status = resp.status
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise ControlPlaneError(f"{method} {url} failed: {exc!r}") from None
        try:
            data = json.loads(text) if text else None
        except ValueError:
            data = text[:1000]
        if status >= 400:
            message = data
            if isinstance(data, dict) and isinstance(data.get("error"), dict):
                message = data["error"].get("message")
            raise ControlPlaneError(f"{method} {url} answered {status}: {message}", status, data)
        return data

    async def block(self) -> dict[str, Any]:
        """The block document: status, bounds, instances, last_scale_at."""
        doc = await self.request("GET", f"{self.base}/")
        if not isinstance(doc, dict):
            raise ControlPlaneError("the block document is not an object")
        return doc

    async def scale(
        self, *, instances: int | None = None, remove: list[str] | None = None, source: str
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"source": source}
        if remove is not None:
            body["remove"] = remove
        else:
            body["instances"] = instances
        return await self.request("POST", f"{self.base}/scale/", body)

    async def replace(self, instance_id: str, reason: str) -> dict[str, Any]:
        return await self.request(
            "POST", f"{self.base}/instances/{instance_id}/replace/", {"reason": reason[:1900]}
        )

    async def report(self, report: dict[str, Any]) -> dict[str, Any]:
        return await self.request("POST", f"{self.base}/health-report/", report)
