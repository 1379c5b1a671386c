"""The ad-hoc resource allocator over a real websocket served by daphne in a child process."""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets
from rest_framework.authtoken.models import Token

from apps.allocator.models import Allocation
from tests.clusters.helpers import make_cluster, node_spec, uid
from tests.support.procs import ManagedProcess, free_port, port_open, python_argv, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def daphne(child_env, tmp_path):
    port = free_port()
    server = ManagedProcess(
        python_argv(
            "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "aios_site.asgi:application"
        ),
        env=child_env,
        log_path=tmp_path / "daphne.log",
    )
    try:
        wait_until(lambda: port_open(port), 60, "daphne to listen")
        yield port
    finally:
        server.stop()


async def exchange(url: str, *messages: object) -> list[dict]:
    replies = []
    async with websockets.connect(url, origin="http://127.0.0.1", open_timeout=10) as ws:
        for message in messages:
            await ws.send(message if isinstance(message, str) else json.dumps(message))
            replies.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
    return replies


def test_adhoc_allocator_and_dry_run_round_trips(daphne, user):
    small, big = uid("n"), uid("n")
    c_small = make_cluster(nodes=[node_spec(small, [("T4", 16384)])])
    c_big = make_cluster(nodes=[node_spec(big, [("A100", 40960)])])
    token = Token.objects.create(user=user)
    adhoc = {
        "adhoc": True,
        "policy_rule_uri": "aios.allocator_best_fit:1.0-stable",
        "clusters": [c_small.id, c_big.id],
        "inputs": {"gpus": 1, "min_gpu_free_memory": 20000},
        "request_id": "r-1",
    }
    dry_run = {
        "action": "dry_run",
        "spec": {
            "blockId": "ws-block",
            "minInstances": 1,
            "policyRulesSpec": [
                {"values": {"name": "resourceAllocator", "parameters": {"gpus": 1}}}
            ],
            "clusters": [c_small.id],
        },
    }
    for path in ("/ws/allocator/", "/ws/allocator/dry-run/"):
        url = f"ws://127.0.0.1:{daphne}{path}?token={token.key}"
        first, second, bad, broken = asyncio.run(
            exchange(url, adhoc, dry_run, {"adhoc": False, "inputs": {}}, "not json")
        )
        assert first["cluster_id"] == c_big.id and first["node_id"] == big
        assert first["gpus"] == [0] and first["request_id"] == "r-1"
        assert second["cluster_id"] == c_small.id and second["dry_run"] is True
        assert bad["error"]["code"] == "validation_error"
        assert broken["error"]["code"] == "parse_error"
    assert not Allocation.objects.exists()


def test_allocator_websocket_needs_authentication(daphne):
    async def closed():
        try:
            async with websockets.connect(
                f"ws://127.0.0.1:{daphne}/ws/allocator/", origin="http://127.0.0.1", open_timeout=10
            ) as ws:
                await asyncio.wait_for(ws.recv(), 10)
        except websockets.exceptions.InvalidStatus as exc:
            return exc.response.status_code
        except websockets.exceptions.ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd else None
        return None

    assert asyncio.run(closed()) in (4401, 403)
