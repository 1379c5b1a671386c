"""Live task progress over a real websocket served by daphne in a child process."""

import asyncio
import json

import pytest
import websockets
from rest_framework.authtoken.models import Token

from apps.tasks import services
from apps.tasks.models import Task
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


def _in_thread(fn, *args):
    """Run ORM work off the event loop, closing the thread's connection afterwards."""
    from django.db import connection

    def run():
        try:
            return fn(*args)
        finally:
            connection.close()

    return asyncio.to_thread(run)


async def receive_json(ws, timeout=10):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


def test_websocket_streams_snapshot_then_live_updates(daphne, user):
    token = Token.objects.create(user=user)
    task = services.create_task("selftest", owner=user)
    url = f"ws://127.0.0.1:{daphne}/ws/tasks/{task.pk}/?token={token.key}"

    async def scenario():
        async with websockets.connect(url, origin="http://127.0.0.1", open_timeout=10) as ws:
            snapshot = await receive_json(ws)
            assert snapshot["type"] == "task.snapshot"
            assert snapshot["task"]["task_status"] == "pending"
            await _in_thread(services.set_progress, task.pk, 40, "copying weights")
            update = await receive_json(ws)
            assert update["type"] == "task.update"
            assert update["task"]["progress"] == 40
            assert update["task"]["progress_message"] == "copying weights"
            await _in_thread(services.complete, task.pk, {"ok": True})
            final = await receive_json(ws)
            assert final["task"]["task_status"] == "completed"
            assert final["task"]["task_status_data"] == {"ok": True}

    asyncio.run(scenario())


def test_websocket_rejects_anonymous_and_other_users(daphne, user, other_user):
    task = services.create_task("selftest", owner=user)
    other_token = Token.objects.create(user=other_user)

    async def closed_with(url):
        try:
            async with websockets.connect(url, origin="http://127.0.0.1", open_timeout=10) as ws:
                await asyncio.wait_for(ws.recv(), 10)
        except websockets.exceptions.InvalidStatus as exc:
            return exc.response.status_code
        except websockets.exceptions.ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd else None
        return None

    base = f"ws://127.0.0.1:{daphne}/ws/tasks/{task.pk}/"
    anonymous = asyncio.run(closed_with(base))
    stranger = asyncio.run(closed_with(f"{base}?token={other_token.key}"))
    # Closing before accept makes daphne refuse the handshake with 403.
    assert anonymous in (4401, 403)
    assert stranger in (4404, 403)
    assert Task.objects.filter(pk=task.pk).exists()
