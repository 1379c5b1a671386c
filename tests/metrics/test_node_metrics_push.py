"""The push endpoint of node-metrics agents: ``POST /api/v1/metrics/nodes/<id>/report/``.

What an agent pushes ends up exactly where the node agent's own reports go (live value,
history, heartbeat); bad payloads are 400, strangers 403, anonymous callers 401."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.clusters.choices import DriverName, NodeStatus
from apps.clusters.models import Cluster, Node
from apps.metrics import services
from apps.metrics.models import NodeMetricSample
from block_sdk.node_agent.hardware import HardwareSampler
from tests.clusters.helpers import forget_redis, make_cluster, node_spec, uid

pytestmark = pytest.mark.django_db


@pytest.fixture
def owned_node(user):
    node_id = uid("n")
    cluster = make_cluster(nodes=[node_spec(node_id)], owner=user, ready=False)
    yield cluster, node_id
    forget_redis(node_id, cluster_ids=(cluster.id,))


def url(node_id: str) -> str:
    return f"/api/v1/metrics/nodes/{node_id}/report/"


def sample(ts: float | None = None, load: float = 0.75) -> dict:
    return {
        "ts": time.time() if ts is None else ts,
        "vcpu": {"count": 4, "utilization": 10.0, "load_1m": load, "load_15m": load},
        "memory": {"totalMem": 8192, "freeMem": 4096, "usedMem": 4096, "averageUtil": 50.0},
        "disk": {"memory": {"freeMem": 10, "usedMem": 5}, "iops": {"total": 7}},
        "gpus": {
            "count": 1,
            "totalFreeMem": 20000,
            "source": "declared",
            "gpus": [{"gpu_id": 0, "modelName": "L4", "freeMem": 20000, "declared": True}],
        },
    }


def test_pushed_sample_is_live_with_history_and_heartbeat(api, owned_node):
    cluster, node_id = owned_node
    assert Node.objects.get(pk=node_id).status == NodeStatus.PENDING

    real = HardwareSampler().sample()  # exactly what the agent sends
    response = api.post(url(node_id), real, format="json")

    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["live"] is True and body["accepted"] == 1
    node = api.get(f"/api/v1/metrics/nodes/{node_id}/").json()
    assert node["healthy"] is True and node["stale"] is False
    assert node["vcpu"]["count"] == real["vcpu"]["count"]
    assert node["memory"]["totalMem"] == real["memory"]["totalMem"]
    assert len(node["history"]) == 1
    row = Node.objects.get(pk=node_id)
    assert row.status == NodeStatus.READY and row.last_heartbeat is not None
    cluster_doc = api.get(f"/api/v1/metrics/clusters/{cluster.id}/").json()
    assert cluster_doc["nodes"]["reporting"] == 1


def test_buffered_samples_fill_history_once_and_newest_is_live(api, owned_node):
    _, node_id = owned_node
    now = time.time()
    buffered = [sample(now - 60 * i, load=float(i)) for i in range(10, -1, -1)]  # oldest first

    first = api.post(url(node_id), {"samples": buffered}, format="json").json()
    again = api.post(url(node_id), {"samples": buffered[:-1]}, format="json").json()

    assert first["live"] is True and first["accepted"] == 11
    # ten backfilled minutes plus the live sample's own history point
    assert NodeMetricSample.objects.filter(node_id=node_id).count() == 11
    assert again["history"] == 0 and again["live"] is False  # a resent batch adds nothing
    assert NodeMetricSample.objects.filter(node_id=node_id).count() == 11
    assert services.node_live_metrics(node_id)["vcpu"]["load_1m"] == 0.0


def test_old_sample_is_history_only_and_past_retention_dropped(api, owned_node):
    _, node_id = owned_node
    stale = sample(time.time() - 600)
    ancient = sample(time.time() - services.RETENTION.total_seconds() - 60)

    body = api.post(url(node_id), {"samples": [stale, ancient]}, format="json").json()

    assert body == {**body, "live": False, "history": 1, "discarded": 1}
    assert services.node_live_metrics(node_id) is None
    assert Node.objects.get(pk=node_id).status == NodeStatus.PENDING  # no heartbeat


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ([1, 2], "must be an object"),
        ({"hello": "world"}, "none of the metric groups"),
        ({"vcpu": {"load_1m": "x" * 300}}, "longer than"),
        ({"vcpu": {"load_1m": [1]}}, "must be a number"),
        ({"vcpu": "busy"}, "vcpu must be an object"),
        ({"vcpu": {"bad key!": 1}}, "invalid key"),
        ({"vcpu": {"load_1m": 1}, "ts": "yesterday"}, "ts must be epoch seconds"),
        ({"vcpu": {"load_1m": 1}, "ts": time.time() + 3600}, "in the future"),
        ({"gpus": {"gpus": [{"temp": {"x": 1}}]}}, "must be a number"),
        ({"samples": "all of them"}, "samples must be a list"),
        ({"samples": []}, "1 to 120 samples"),
        ({"samples": [sample()] * 121}, "1 to 120 samples"),
        ({**sample(), "node_id": "someone-else"}, "does not match"),
    ],
)
def test_bad_payload_is_400_in_the_error_shape(api, owned_node, payload, fragment):
    _, node_id = owned_node
    response = api.post(url(node_id), payload, format="json")
    assert response.status_code == 400, response.json()
    error = response.json()["error"]
    assert fragment in error["message"]
    assert services.node_live_metrics(node_id) is None


def test_non_finite_number_is_400(api, owned_node):
    _, node_id = owned_node
    response = api.post(url(node_id), '{"vcpu": {"load_1m": NaN}}', content_type="application/json")
    assert response.status_code == 400


def test_malformed_json_is_400(api, owned_node):
    _, node_id = owned_node
    response = api.post(url(node_id), "{not json", content_type="application/json")
    assert response.status_code == 400
    assert "error" in response.json()


def test_only_owner_or_staff_may_report(client_for, other_user, staff_api, anon_client, owned_node):
    _, node_id = owned_node
    stranger = client_for(other_user).post(url(node_id), sample(), format="json")
    anonymous = anon_client.post(url(node_id), sample(), format="json")
    staff = staff_api.post(url(node_id), sample(), format="json")

    assert stranger.status_code == 403
    assert stranger.json()["error"]["code"] == "forbidden"
    assert anonymous.status_code == 401
    assert staff.status_code == 200
    unknown = staff_api.post(url("no-such-node"), sample(), format="json")
    assert unknown.status_code == 404


def test_ownerless_cluster_takes_reports_from_staff_only(api, staff_api):
    node_id = uid("n")
    cluster = make_cluster(nodes=[node_spec(node_id)], owner=None)
    try:
        assert api.post(url(node_id), sample(), format="json").status_code == 403
        assert staff_api.post(url(node_id), sample(), format="json").status_code == 200
    finally:
        forget_redis(node_id, cluster_ids=(cluster.id,))


def test_kubernetes_node_report_moves_heartbeat_but_not_readiness(api, owned_node):
    cluster, node_id = owned_node
    Cluster.objects.filter(pk=cluster.pk).update(driver=DriverName.KUBERNETES)
    Node.objects.filter(pk=node_id).update(status=NodeStatus.NOT_READY, last_heartbeat=None)

    assert api.post(url(node_id), sample(), format="json").status_code == 200

    node = Node.objects.get(pk=node_id)
    assert node.status == NodeStatus.NOT_READY  # the driver's sync owns readiness there
    assert node.last_heartbeat is not None
    assert timezone.now() - node.last_heartbeat < timedelta(seconds=30)
