"""A local fake Kubernetes API server (kmock's stateful emulator) for the driver's tests.

kmock serves the Kubernetes REST conventions over real HTTP and keeps the objects it is sent
in memory; it records every request. It runs here in a thread with its own event loop, so
the driver's synchronous client talks to it like to any API server.

Two things kmock's emulator does not do as a real API server does, added below and nothing
more: a server-side apply (``PATCH`` with ``application/apply-patch+yaml``) of a missing
object creates it, and nothing garbage-collects: ``collect_garbage`` stands in for the
controllers that remove the pods of deleted Deployments/Jobs.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import re
import threading
from typing import Any

import attrs
import kmock
import yaml
from kmock._internal import enums
from kmock._internal.rendering import Request

from apps.clusters.drivers.k8s.client import RESOURCES, Resource

logging.getLogger("aiohttp.access").setLevel(logging.WARNING)  # one line per request
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def resource_of(kind: str) -> kmock.resource:
    info: Resource = RESOURCES[kind]
    group, _, version = info.api_version.rpartition("/")
    return kmock.resource(group=group, version=version, plural=info.plural)


_NAMESPACE_PATH = re.compile(r"^/api/v1/namespaces/([^/]+)/?$")
_ACTIONS = {
    "GET": enums.action.FETCH,
    "PATCH": enums.action.UPDATE,
    "PUT": enums.action.UPDATE,
    "DELETE": enums.action.DELETE,
}


def _namespace_object(request: Request) -> Request:
    """kmock reads ``/api/v1/namespaces/<name>`` as a namespace prefix, not as the
    Namespace object it is; route it to the ``namespaces`` resource."""
    match = _NAMESPACE_PATH.match(request.url.path)
    method = str(request.method.value if hasattr(request.method, "value") else request.method)
    if not match or method not in _ACTIONS:
        return request
    return attrs.evolve(
        request,
        resource=resource_of("Namespace"),
        namespace=None,
        name=match.group(1),
        action=_ACTIONS[method],
    )


def _summary(r: Request) -> dict[str, Any]:
    return {
        "method": str(r.method.value if hasattr(r.method, "value") else r.method),
        "path": r.url.path,
        "query": dict(r.params),
        "content_type": r.headers.get("Content-Type", ""),
        "authorization": r.headers.get("Authorization", ""),
        "data": copy.deepcopy(r.data),
    }


@attrs.define(kw_only=True)
class ApplyingEmulator(kmock.KubernetesEmulator):
    """kmock's emulator plus create-on-apply (a real API server's server-side apply) and
    Namespace objects by name."""

    journal: list[dict[str, Any]] = attrs.field(factory=list, init=False)

    async def _handle(self, request: Request):
        self.journal.append(_summary(request))
        # kmock matches each request against its whole history (cost grows with every
        # request); the tests read our journal instead, so only the current one is kept.
        del self._requests[:-1]
        routed = _namespace_object(request)
        if routed is not request:
            # Reactions find their requests in the root's log by identity.
            self._requests[self._requests.index(request)] = routed
            request = routed
        content_type = request.headers.get("Content-Type", "")
        if (
            request.action == enums.action.UPDATE
            and request.resource is not None
            and request.name
            and content_type.startswith("application/apply-patch")
        ):
            key = (request.resource, request.namespace, request.name)
            async with self._lock:
                if key not in self._objects:
                    self._objects[key] = copy.deepcopy(request.data)
                elif self._objects[key].deleted:
                    self._objects[key].create(copy.deepcopy(request.data))
        return await super()._handle(request)


class FakeKubernetes:
    """Start with ``start()``; ``url`` is the API server; ``stop()`` ends it."""

    def __init__(self) -> None:
        self.emulator: ApplyingEmulator | None = None
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    # -- life cycle ------------------------------------------------------------------------
    def start(self) -> FakeKubernetes:
        self._thread = threading.Thread(target=self._run, name="fake-kubernetes", daemon=True)
        self._thread.start()
        if not self._ready.wait(15):
            raise RuntimeError("the fake Kubernetes API server did not start")
        if self._error is not None:
            raise RuntimeError(f"the fake API server failed: {self._error!r}")
        return self

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as exc:  # report it to the starting thread
            self._error = exc
            self._ready.set()
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with ApplyingEmulator() as emulator, kmock.Server(emulator) as server:
            self.emulator = emulator
            # Every kind the driver uses is known (listed even while empty).
            for kind in RESOURCES:
                emulator.resources[resource_of(kind)] = kmock.ResourceInfo(
                    kind=kind, namespaced=RESOURCES[kind].namespaced
                )
            self.url = str(server.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()

    def stop(self) -> None:
        """Stop serving (idempotent: a test may stop it to make the API unreachable)."""
        if self._thread is None or not self._thread.is_alive():
            return
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def call(self, fn, *args: Any) -> Any:
        """Run ``fn(*args)`` on the server's loop (its state is not thread-safe)."""
        result: dict[str, Any] = {}
        done = threading.Event()

        def run() -> None:
            try:
                result["value"] = fn(*args)
            except BaseException as exc:
                result["error"] = exc
            finally:
                done.set()

        assert self._loop is not None
        self._loop.call_soon_threadsafe(run)
        if not done.wait(10):
            raise TimeoutError("the fake API server's loop did not answer")
        if "error" in result:
            raise result["error"]
        return result.get("value")

    # -- the test's side -----------------------------------------------------------------------
    def kubeconfig(self, *, token: str = "test-token") -> str:  # noqa: S107 - a fake
        return yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                "users": [{"name": "aios", "user": {"token": token}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "aios"}}],
                "current-context": "fake",
            }
        )

    def put(self, kind: str, obj: dict[str, Any]) -> None:
        """Store an object as if someone else (or a controller) had created it."""
        obj = copy.deepcopy(obj)
        obj.setdefault("kind", kind)
        meta = obj["metadata"]

        def store() -> None:
            assert self.emulator is not None
            key = (resource_of(kind), meta.get("namespace"), meta["name"])
            if key in self.emulator.objects and not self.emulator.objects[key].deleted:
                self.emulator.objects[key].patch(obj)
            else:
                self.emulator.objects[key] = obj

        self.call(store)

    def remove(self, kind: str, namespace: str | None, name: str) -> None:
        def drop() -> None:
            assert self.emulator is not None
            key = (resource_of(kind), namespace, name)
            if key in self.emulator.objects and not self.emulator.objects[key].deleted:
                self.emulator.objects[key].delete()

        self.call(drop)

    def objects(self, kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """The live objects of a kind (optionally of one namespace), as plain dicts."""

        def collect() -> list[dict[str, Any]]:
            assert self.emulator is not None
            wanted = resource_of(kind)
            out = []
            for (resource, ns, _name), obj in self.emulator.objects.items():
                if resource != wanted or obj.deleted:
                    continue
                if namespace is not None and ns != namespace:
                    continue
                out.append(copy.deepcopy(dict(obj.raw)))
            return out

        return self.call(collect)

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        for obj in self.objects(kind, namespace):
            if obj["metadata"]["name"] == name:
                return obj
        return None

    def requests(self) -> list[dict[str, Any]]:
        """Every request received so far: method, path, query, content type, body."""

        def collect() -> list[dict[str, Any]]:
            assert self.emulator is not None
            return copy.deepcopy(self.emulator.journal)

        return self.call(collect)

    def writes(self, since: int = 0) -> list[dict[str, Any]]:
        return [r for r in self.requests()[since:] if r["method"] in WRITE_METHODS]

    def collect_garbage(self, namespace: str) -> int:
        """What the garbage collector would do: remove pods whose owner (by
        ``ownerReferences``) is gone."""
        removed = 0
        for pod in self.objects("Pod", namespace):
            owners = pod["metadata"].get("ownerReferences") or []
            if owners and all(self.get(o["kind"], namespace, o["name"]) is None for o in owners):
                self.remove("Pod", namespace, pod["metadata"]["name"])
                removed += 1
        return removed
