"""The dashboard's pages as a signed-in user sees them: real rows, counts, links, 4xx."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from apps.blocks.models import Block
from apps.clusters.models import GPU, Cluster, Node
from apps.tasks.models import Task
from apps.vdags.models import VDag

pytestmark = pytest.mark.django_db


def pages(net) -> dict[str, str]:
    return {
        "overview": "/",
        "clusters": reverse("dashboard:clusters"),
        "cluster": reverse("dashboard:cluster", args=[net.clusters["east"].pk]),
        "blocks": reverse("dashboard:blocks"),
        "block": reverse("dashboard:block", args=[net.blocks["a"].pk]),
        "vdags": reverse("dashboard:vdags"),
        "vdag": reverse("dashboard:vdag", args=[net.vdag.pk]),
        "tasks": reverse("dashboard:tasks"),
    }


PAGE_NAMES = ["overview", "clusters", "cluster", "blocks", "block", "vdags", "vdag", "tasks"]


def counts(html: str) -> dict[str, int]:
    return {k: int(v) for k, v in re.findall(r'data-count="([^"]+)">(\d+)<', html)}


@pytest.mark.parametrize("name", PAGE_NAMES)
def test_every_page_renders_its_rows_for_a_signed_in_user(signed_in, network, name):
    response = signed_in.get(pages(network)[name])
    assert response.status_code == 200
    html = response.content.decode()
    expected = {
        "overview": [network.tasks["running"].task_type, "placing instances"],
        "clusters": [network.clusters["east"].pk, network.clusters["west"].pk],
        "cluster": [network.nodes["e1"].pk, network.nodes["e2"].pk, network.blocks["a"].pk],
        "blocks": [b.pk for b in network.blocks.values()],
        "block": [network.instances["a"].pk, network.nodes["e1"].pk, "10.0.0.1:5005"],
        "vdags": [network.vdag.pk, network.controller.pk],
        "vdag": [network.blocks["d"].pk, network.controller.pk, "10.0.0.1:50100"],
        "tasks": [str(network.tasks["running"].pk), "no GPU fits"],
    }[name]
    for text in expected:
        assert text in html, f"{text!r} missing from the {name} page"


@pytest.mark.parametrize("name", PAGE_NAMES)
def test_anonymous_visitor_is_sent_to_the_login_page(client, network, name):
    url = pages(network)[name]
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("dashboard:login") + "?next=")


def test_dashboard_root_redirects_to_the_overview(signed_in, db):
    response = signed_in.get("/dashboard/")
    assert response.status_code == 302
    assert response["Location"] == "/"


def test_login_page_signs_in_a_regular_user_and_returns_to_the_page(client, user):
    target = reverse("dashboard:blocks")
    page = client.get(f"{reverse('dashboard:login')}?next={target}")
    assert page.status_code == 200
    assert b'name="username"' in page.content
    response = client.post(
        f"{reverse('dashboard:login')}?next={target}",
        {"username": "alice", "password": "pw-alice-123", "next": target},
    )
    assert response.status_code == 302
    assert response["Location"] == target
    assert client.get(target).status_code == 200


def test_wrong_password_stays_on_the_login_page(client, user):
    response = client.post(
        reverse("dashboard:login"), {"username": "alice", "password": "not-her-password"}
    )
    assert response.status_code == 200
    assert b"errornote" in response.content
    assert client.get("/").status_code == 302


def test_logout_ends_the_session(signed_in, db):
    assert signed_in.get("/").status_code == 200
    response = signed_in.post(reverse("dashboard:logout"))
    assert response.status_code == 302
    assert signed_in.get("/").status_code == 302


@pytest.mark.parametrize(
    ("route", "arg"),
    [("cluster", "no-such-cluster"), ("block", "no-such-block"), ("vdag", "nope:1.0-x")],
)
def test_unknown_object_is_404(signed_in, db, route, arg):
    assert signed_in.get(reverse(f"dashboard:{route}", args=[arg])).status_code == 404


def test_invalid_filter_value_is_400_with_the_error_shown(signed_in, network):
    response = signed_in.get(reverse("dashboard:blocks") + "?status=sleeping")
    assert response.status_code == 400
    html = response.content.decode()
    assert "Invalid filter" in html
    assert network.blocks["a"].pk not in html


def test_list_filters_narrow_the_rows(signed_in, network):
    html = signed_in.get(reverse("dashboard:blocks") + "?status=failed").content.decode()
    assert network.blocks["c"].pk in html
    assert network.blocks["a"].pk not in html
    html = signed_in.get(reverse("dashboard:clusters") + "?region=us").content.decode()
    assert network.clusters["west"].pk in html
    assert network.clusters["east"].pk not in html


def test_overview_counts_match_the_rows(signed_in, network):
    html = signed_in.get("/").content.decode()
    shown = counts(html)
    assert shown["clusters-total"] == Cluster.objects.count() == 2
    assert shown["clusters-live"] == 1
    assert shown["clusters-provisioning"] == 1
    # e1 heartbeats; e2 went quiet ten minutes ago; w1 never reported.
    assert shown["nodes-total"] == Node.objects.count() == 3
    assert shown["nodes-up"] == 1
    assert shown["nodes-down"] == 2
    assert shown["nodes-never"] == 1
    assert shown["gpus-total"] == GPU.objects.count() == 3
    assert shown["gpus-reserved"] == 1
    assert shown["gpus-free"] == 2
    assert shown["gpus-shared"] == 1
    assert shown["blocks-total"] == Block.objects.count() == 4
    assert shown["blocks-running"] == 2
    assert shown["blocks-failed"] == 1
    assert shown["blocks-starting"] == 1
    assert shown["instances-healthy"] == 1
    assert shown["instances-unhealthy"] == 1
    assert shown["vdags-total"] == VDag.objects.count() == 1
    assert shown["vdags-active"] == 1
    assert shown["controllers-running"] == 1
    # Bob's task is not Alice's to see; the ownerless (system) one is.
    assert shown["tasks-in_progress"] == 1 == shown["tasks-running"]
    assert shown["tasks-pending"] == 1
    assert shown["tasks-completed"] == 1
    assert shown["tasks-failed"] == 1
    assert "secret_of_bob" not in html


def test_staff_overview_counts_every_task(client, network, staff_user):
    client.force_login(staff_user)
    html = client.get("/").content.decode()
    assert counts(html)["tasks-in_progress"] == 2
    assert Task.objects.filter(task_status="in_progress").count() == 2


def test_overview_links_status_counts_to_filtered_lists(signed_in, network):
    html = signed_in.get("/").content.decode()
    assert 'href="/dashboard/blocks/?status=failed"' in html
    assert 'href="/dashboard/tasks/?task_status=in_progress"' in html
    assert 'href="/dashboard/clusters/?status=live"' in html
