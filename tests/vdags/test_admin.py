"""Admin pages of the vdags and inference apps render, and their actions work."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from django.test import Client

from apps.inference.models import InferenceServerDeployment, RequestLog
from apps.vdags.models import QualitySample, VDag, VDagController
from tests.vdags.support import make_block, uid

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(staff_user) -> Client:
    staff_user.is_superuser = True
    staff_user.save()
    client = Client()
    client.force_login(staff_user)
    return client


def test_every_page_renders(admin_client, cluster):
    block = make_block(uid("blk"), cluster)
    vdag = VDag.objects.create(
        vdag_uri=f"{uid('adm')}:1.0-stable",
        name="adm",
        version="1.0",
        release_tag="stable",
        status="active",
        block_ids=[block.pk],
        compiled_graph={
            "nodes": {"a": {"block_id": block.pk}},
            "edges": {},
            "order": ["a"],
        },
    )
    controller = VDagController.objects.create(
        vdag_controller_id=uid("ctl"), vdag=vdag, cluster=cluster
    )
    sample = QualitySample.objects.create(
        vdag_controller_id=controller.pk,
        vdag_uri=vdag.pk,
        stream_id="1-0",
        ts=datetime.now(tz=UTC),
        request={"data": "{}"},
    )
    deployment = InferenceServerDeployment.objects.create(
        deployment_id=uid("dep"), name="d", cluster=cluster
    )
    log = RequestLog.objects.create(
        request_id=uuid.uuid4(), session_id="s", ts=datetime.now(tz=UTC), data='{"x": 1}'
    )
    pages = [
        "/admin/vdags/vdag/",
        f"/admin/vdags/vdag/{vdag.pk}/change/",
        "/admin/vdags/vdagcontroller/",
        f"/admin/vdags/vdagcontroller/{controller.pk}/change/",
        "/admin/vdags/qualitysample/",
        f"/admin/vdags/qualitysample/{sample.pk}/change/",
        "/admin/inference/inferenceserverdeployment/",
        f"/admin/inference/inferenceserverdeployment/{deployment.pk}/change/",
        "/admin/inference/requestlog/",
        f"/admin/inference/requestlog/{log.pk}/change/",
    ]
    for page in pages:
        response = admin_client.get(page)
        assert response.status_code == 200, page
    detail = admin_client.get(f"/admin/vdags/vdag/{vdag.pk}/change/").content.decode()
    assert block.pk in detail  # the route table shows the block of node "a"


def test_admin_actions(admin_client, cluster):
    vdag = VDag.objects.create(
        vdag_uri=f"{uid('act')}:1.0-stable",
        name="act",
        version="1.0",
        release_tag="stable",
        status="active",
    )
    controller = VDagController.objects.create(
        vdag_controller_id=uid("ctl"), vdag=vdag, cluster=cluster
    )
    response = admin_client.post(
        "/admin/vdags/vdag/",
        {"action": "delete_vdags", "_selected_action": [vdag.pk]},
        follow=True,
    )
    assert b"remove them first" in response.content  # served: refused, nothing deleted
    assert VDag.objects.filter(pk=vdag.pk).exists()
    response = admin_client.post(
        "/admin/vdags/vdagcontroller/",
        {"action": "remove_controllers", "_selected_action": [controller.pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert not VDagController.objects.filter(pk=controller.pk).exists()
    response = admin_client.post(
        "/admin/vdags/vdag/",
        {"action": "delete_vdags", "_selected_action": [vdag.pk]},
        follow=True,
    )
    assert not VDag.objects.filter(pk=vdag.pk).exists()
