"""A headless Chromium driven over the DevTools protocol (no extra packages): enough to
sign in with a session cookie, open a page, read the DOM and take a screenshot."""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import time
import urllib.request
from pathlib import Path
from typing import Any

from websockets.sync.client import connect

from tests.support.procs import ManagedProcess, free_port, wait_until

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    def __init__(self, workdir: Path, *, width: int = 1400, height: int = 1000) -> None:
        assert CHROMIUM, "chromium is not installed"
        workdir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        self.proc = ManagedProcess(
            [
                CHROMIUM,
                "--headless=new",
                "--no-sandbox",  # tests run as root in a container
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--hide-scrollbars",
                f"--window-size={width},{height}",
                f"--remote-debugging-port={port}",
                "--remote-allow-origins=*",
                f"--user-data-dir={workdir / 'chromium-profile'}",
                "about:blank",
            ],
            log_path=workdir / "chromium.log",
        )
        self._ids = itertools.count(1)
        try:
            target = wait_until(lambda: self._page_target(port), 30, "chromium's DevTools port")
            self.ws = connect(target, max_size=None, open_timeout=10)
            self.call("Page.enable")
            self.call("Network.enable")
        except BaseException:
            self.proc.stop()
            raise

    @staticmethod
    def _page_target(port: int) -> str | None:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as answer:
            targets = json.load(answer)
        pages = [t for t in targets if t.get("type") == "page"]
        return pages[0]["webSocketDebuggerUrl"] if pages else None

    def call(self, method: str, timeout: float = 15, **params: Any) -> dict[str, Any]:
        call_id = next(self._ids)
        self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no answer to {method} within {timeout}s")
            message = json.loads(self.ws.recv(timeout=left))
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def set_cookie(self, name: str, value: str, url: str) -> None:
        self.call("Network.setCookie", name=name, value=value, url=url)

    def open(self, url: str, timeout: float = 20) -> None:
        self.call("Page.navigate", url=url)
        wait_until(lambda: self.eval("document.readyState") == "complete", timeout, f"{url}")

    def eval(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def screenshot(self, path: Path) -> bytes:
        data = base64.b64decode(
            self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        )
        path.write_bytes(data)
        return data

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            self.proc.stop()
