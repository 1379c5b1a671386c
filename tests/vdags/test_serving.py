"""vDAGs served for real: node agents in two local clusters, blocks created with
createBlock, vDAGs with createvDAG, controllers through the REST API; requests over gRPC
``/vDAGInferenceService/infer``. Outputs are checked against the blocks' functions composed
directly; hops between clusters are seen on the receiving executors' InferenceProxy."""

from __future__ import annotations

import grpc
import pytest

from apps.clusters.models import Workload
from tests.support.procs import wait_until
from tests.vdags.support import affine, node, uid, vdag_values

pytestmark = pytest.mark.django_db(transaction=True)


def test_vdags_served_by_controllers_compose_like_their_blocks_across_clusters(live_network):
    net = live_network
    c1, c2, n1, n2 = uid("vc1"), uid("vc2"), uid("n1"), uid("n2")
    agents = {n1: net.agent(c1, n1, wait=False), n2: net.agent(c2, n2, wait=False)}
    for node_id, proc in agents.items():
        net.wait_node(node_id, proc)
    component = net.component(uid("affine"))
    a, b, d = uid("blk-a"), uid("blk-b"), uid("blk-d")
    net.block(component, a, c1, name="a", mul=2.0, add=1.0)
    net.block(component, b, c1, name="b", mul=3.0, add=0.0)
    net.block(component, d, c2, name="d", mul=1.0, add=-5.0)
    blocks = net.wait_blocks([a, b, d])

    fa = lambda x: affine(x, 2, 1)  # noqa: E731
    fb = lambda x: affine(x, 3, 0)  # noqa: E731
    fd = lambda x: affine(x, 1, -5)  # noqa: E731

    # A 3-block chain whose middle hop crosses into the other cluster and back.
    chain = net.create_vdag(
        vdag_values(
            uid("chain"),
            [node("a", a), node("d", d), node("b", b)],
            [("a", "d"), ("d", "b")],
            ["a"],
            ["b"],
            controller={
                "policies": {
                    "quotaChecker": {
                        "policyRuleURI": "aios.quota_session_global:1.0-stable",
                        "parameters": {"requests_per_session": 3, "window_s": 600},
                    }
                }
            },
        )
    )
    ctl = net.controller(chain["vdagURI"], c1, quality_sample_rate=1.0)
    assert ctl["status"] == "running"
    address = ctl["public_url"]
    assert address and ":" in address
    proxied_before = net.executor_proxy_count(blocks[d])
    for seq, x in enumerate([0.0, 1.5, -4.0], start=1):
        out = net.infer(address, {"x": x}, session="chain", seq=seq)
        assert out["x"] == fb(fd(fa(x)))
        assert out["path"] == ["a", "d", "b"]
    # The hops into cluster c2 went over gRPC (InferenceProxy of d's executor).
    assert net.executor_proxy_count(blocks[d]) >= proxied_before + 3
    # The quota policy of the vDAG spec: the 4th request of the session is refused.
    with pytest.raises(grpc.RpcError) as denied:
        net.infer(address, {"x": 1.0}, session="chain", seq=4)
    assert denied.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # A block raising mid-graph: the caller gets the error, well within the deadline.
    with pytest.raises(grpc.RpcError) as failed:
        net.infer(address, {"x": 1.0, "raise_at": "d"}, session="other", seq=1, timeout=15)
    assert failed.value.code() not in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.OK)
    assert "d was asked to fail" in failed.value.details()

    # Diamond: fan-out to both clusters, fan-in (sum) back in c1.
    diamond = net.create_vdag(
        vdag_values(
            uid("diamond"),
            [node("split", a), node("left", b), node("right", d), node("join", a)],
            [("split", "left"), ("split", "right"), ("left", "join"), ("right", "join")],
            ["split"],
            ["join"],
        )
    )
    # Two tails: the answer is keyed by tail label.
    fork = net.create_vdag(
        vdag_values(
            uid("fork"),
            [node("head", a), node("t1", b), node("t2", d)],
            [("head", "t1"), ("head", "t2")],
            ["head"],
            ["t1", "t2"],
        )
    )
    # Nested: b -> (the chain) -> a.
    nested = net.create_vdag(
        vdag_values(
            uid("nested"),
            [
                node("pre", b),
                {"nodeLabel": "inner", "nodeType": "vdag", "vdagURI": chain["vdagURI"]},
                node("post", a),
            ],
            [("pre", "inner"), ("inner", "post")],
            ["pre"],
            ["post"],
        )
    )
    assert nested["compiled_graph"]["edges"]["pre"] == ["inner/a"]
    ctl_diamond = net.controller(diamond["vdagURI"], c1)
    ctl_fork = net.controller(fork["vdagURI"], c2)
    ctl_nested = net.controller(nested["vdagURI"], c1)
    for x in (2.0, -1.0):
        split = fa(x)
        out = net.infer(ctl_diamond["public_url"], {"x": x}, session=uid("s"))
        assert out["x"] == fa(fb(split) + fd(split))
        assert out["path"] == ["a", "b", "a", "d", "a"] or out["path"] == ["a", "d", "a", "b", "a"]
        out = net.infer(ctl_fork["public_url"], {"x": x}, session=uid("s"))
        assert out["t1"]["x"] == fb(fa(x)) and out["t2"]["x"] == fd(fa(x))
        out = net.infer(ctl_nested["public_url"], {"x": x}, session=uid("s"))
        assert out["x"] == fa(fb(fd(fa(fb(x)))))
        assert out["path"] == ["b", "a", "d", "b", "a"]

    # Controllers by vDAG URI; quality samples of the chain's controller; metrics history.
    listed = net.api.get(f"/api/v1/vdag-controllers/by-vdag-uri/{chain['vdagURI']}/").json()
    assert [c["vdag_controller_id"] for c in listed] == [ctl["vdag_controller_id"]]
    samples = wait_until(
        lambda: (
            net.api.get(
                "/api/v1/vdag-quality-samples/", {"controller": ctl["vdag_controller_id"]}
            ).json()["results"]
            or None
        ),
        15,
        "quality samples",
    )
    assert samples[0]["vdag_uri"] == chain["vdagURI"] and samples[0]["session_id"] == "chain"
    from apps.vdags.models import VDagController
    from apps.vdags.services import telemetry

    wait_until(
        lambda: telemetry.collect_metrics(VDagController.objects.get(pk=ctl["vdag_controller_id"])),
        15,
        "controller metrics",
    )
    metrics = net.api.get(f"/api/v1/metrics/vdags/{chain['vdagURI']}/").json()
    assert metrics, metrics

    # Removal: the REST delete stops the controller's process.
    workload_ids = list(
        Workload.objects.filter(
            labels__vdag_controller_id=ctl_fork["vdag_controller_id"]
        ).values_list("pk", flat=True)
    )
    assert workload_ids
    response = net.api.delete(f"/api/v1/vdag-controllers/{ctl_fork['vdag_controller_id']}/?wait=1")
    assert response.status_code == 200, response.content
    assert not Workload.objects.filter(pk__in=workload_ids).exists()
    gone = net.api.get(f"/api/v1/vdag-controllers/{ctl_fork['vdag_controller_id']}/")
    assert gone.status_code == 404
