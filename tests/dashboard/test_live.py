"""What the pages' live parts stand on: the session cookie of a dashboard login opens the
task websocket (the tasks page's script uses nothing else), live metrics that are missing or
unreachable leave the pages standing, and the admin links to the dashboard."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis
import websockets
from django.test import Client
from django.urls import reverse

from apps.metrics import services as metrics
from apps.tasks import services as task_services
from tests.support.procs import ManagedProcess, free_port, port_open, python_argv, wait_until


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


@pytest.mark.django_db(transaction=True)
def test_session_cookie_of_a_dashboard_login_opens_the_task_websocket(daphne, user):
    client = Client()
    assert (
        client.post(
            reverse("dashboard:login"), {"username": "alice", "password": "pw-alice-123"}
        ).status_code
        == 302
    )
    session = client.cookies["sessionid"].value
    task = task_services.create_task("selftest", owner=user)
    url = f"ws://127.0.0.1:{daphne}/ws/tasks/{task.pk}/"
    origin = f"http://127.0.0.1:{daphne}"

    async def scenario():
        async with websockets.connect(
            url,
            origin=origin,
            additional_headers={"Cookie": f"sessionid={session}"},
            open_timeout=10,
        ) as ws:
            first = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert first["type"] == "task.snapshot"
            assert first["task"]["task_id"] == str(task.pk)

    asyncio.run(scenario())


@pytest.mark.django_db
def test_pages_stand_when_redis_does_not_answer(signed_in, network, monkeypatch):
    dead = redis.Redis(port=free_port(), socket_connect_timeout=0.5, socket_timeout=0.5)
    monkeypatch.setattr(metrics, "_redis", lambda: dead)
    for url in (
        reverse("dashboard:clusters"),
        reverse("dashboard:cluster", args=[network.clusters["east"].pk]),
        reverse("dashboard:block", args=[network.blocks["a"].pk]),
        reverse("dashboard:vdag", args=[network.vdag.pk]),
    ):
        response = signed_in.get(url)
        assert response.status_code == 200, url
        assert b"Live metrics are unavailable" in response.content, url


@pytest.mark.django_db
def test_a_node_without_live_metrics_says_so(signed_in, network):
    metrics._redis().delete(metrics.NODE_KEY.format(network.nodes["e1"].pk))
    html = signed_in.get(
        reverse("dashboard:cluster", args=[network.clusters["east"].pk])
    ).content.decode()
    assert html.count("no live metrics") == 2


@pytest.mark.django_db
def test_admin_header_links_to_the_dashboard(client, staff_user):
    client.force_login(staff_user)
    html = client.get("/admin/").content.decode()
    assert f'href="{reverse("dashboard:overview")}"' in html
