"""The dashboard in a real browser (headless Chromium, skipped where it is not installed),
served by daphne as in production: a screenshot of the overview, and the tasks page's
progress bars following a task live over the session-authenticated websocket."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from django.test import Client

from apps.tasks import services as task_services
from tests.dashboard.browser import CHROMIUM, Browser
from tests.dashboard.conftest import build_network
from tests.support.procs import ManagedProcess, free_port, port_open, python_argv, wait_until

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed"),
]


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
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def browser(tmp_path, daphne, user):
    """A browser signed in as the regular user (the session cookie of a real login)."""
    client = Client()
    client.force_login(user)
    chromium = Browser(tmp_path)
    try:
        chromium.set_cookie("sessionid", client.cookies["sessionid"].value, daphne)
        yield chromium
    finally:
        chromium.close()


@pytest.fixture
def network(user, other_user):
    from apps.metrics import services as metrics

    client = metrics._redis()  # the real one, even if a test swaps it out
    net = build_network(user, other_user)
    yield net
    client.delete(*net.redis_keys)


def test_overview_screenshot(browser, daphne, network, tmp_path):
    net = network
    browser.open(f"{daphne}/")
    assert browser.eval("document.title").startswith("Network overview")
    assert browser.eval("document.querySelector('[data-count=\"nodes-up\"]').textContent") == "1"
    # The stylesheet arrived (served by daphne, nothing fetched from outside).
    assert browser.eval("getComputedStyle(document.querySelector('.topbar')).display") == "flex"
    png = browser.screenshot(tmp_path / "overview.png")
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    browser.open(f"{daphne}/dashboard/vdags/{net.vdag.pk}/")
    labels = browser.eval(
        "[...document.querySelectorAll('svg.vdag-graph g.node')].map(g => g.dataset.label)"
    )
    assert sorted(labels) == ["a", "b", "c", "d"]
    browser.screenshot(tmp_path / "vdag.png")
    browser.open(f"{daphne}/dashboard/clusters/{net.clusters['east'].pk}/")
    assert browser.eval("document.querySelectorAll('svg.spark polyline').length") == 2
    browser.screenshot(tmp_path / "cluster.png")
    browser.open(f"{daphne}/dashboard/blocks/{net.blocks['a'].pk}/")
    browser.screenshot(tmp_path / "block.png")
    keep = os.environ.get("AIOS_DASHBOARD_SCREENSHOTS")
    if keep:  # a place to look at them: AIOS_DASHBOARD_SCREENSHOTS=/tmp/shots pytest ...
        Path(keep).mkdir(parents=True, exist_ok=True)
        for name in ("overview.png", "vdag.png", "cluster.png", "block.png"):
            shutil.copy(tmp_path / name, Path(keep) / name)


def test_tasks_page_follows_progress_live(browser, daphne, user):
    task = task_services.create_task("block_alloc", owner=user)
    task_services.start(task.pk, "placing")
    browser.open(f"{daphne}/dashboard/tasks/")
    row = f"document.getElementById('task-{task.pk}')"
    wait_until(
        lambda: (
            browser.eval("document.getElementById('live-state').textContent") == "live: 1 connected"
        ),
        15,
        "the page's websocket to connect",
    )
    task_services.set_progress(task.pk, 70, "copying weights")
    wait_until(
        lambda: browser.eval(f"{row}.querySelector('[data-field=bar]').style.width") == "70%",
        15,
        "the progress bar to move",
    )
    assert browser.eval(f"{row}.querySelector('[data-field=message]').textContent") == (
        "copying weights"
    )
    task_services.complete(task.pk, {"ok": True})
    wait_until(
        lambda: browser.eval(f"{row}.dataset.status") == "completed",
        15,
        "the row to show the task finished",
    )
    assert browser.eval(f"{row}.querySelector('[data-field=status]').className") == "badge good"
    wait_until(
        lambda: browser.eval("document.getElementById('live-state').textContent") == "all finished",
        10,
        "the socket to close once the task finished",
    )
