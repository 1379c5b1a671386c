"""``manage.py aios_k8s_render``: prints, as multi-document YAML, exactly the manifests the
driver applies — for a block, a vDAG controller and the cluster — without contacting it."""

from __future__ import annotations

import io
import json
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from django.core.management import CommandError, call_command

from apps.clusters import services
from apps.clusters.choices import WorkloadKind
from apps.clusters.drivers import get_driver
from apps.clusters.drivers.k8s import names, render
from apps.clusters.models import Workload
from tests.k8s.conftest import k8s_node

SPECS = Path(__file__).parent / "specs"
BLOCK = str(SPECS / "block.json")
COMPONENT = str(SPECS / "component.json")
THIRD_PARTY = str(SPECS / "component-third-party.json")


def run(*args: str) -> list[dict]:
    out = io.StringIO()
    call_command("aios_k8s_render", *args, stdout=out)
    text = out.getvalue()
    assert text.startswith("apiVersion:") or text.startswith("---")
    return [d for d in yaml.safe_load_all(text) if d]


def by_key(docs: list[dict]) -> dict[tuple[str, str | None, str], dict]:
    return {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d for d in docs}


def strict(docs: list[dict]) -> None:
    for doc in docs:
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


@pytest.fixture
def gpu_cluster(cluster, fake_k8s):
    """A provisioned cluster with one GPU node (``gpu-1``, 2 GPUs)."""
    fake_k8s.put("Node", k8s_node("gpu-1", gpus=2, gpu_product="NVIDIA-L4"))
    get_driver(cluster).provision_cluster()
    return cluster


def test_block_render_is_exactly_what_the_driver_applies(
    gpu_cluster, fake_k8s, django_capture_on_commit_callbacks
) -> None:
    before = len(fake_k8s.requests())
    docs = run("--kind", "block", "--spec", BLOCK, "--node", "gpu-1", "--component", COMPONENT)
    assert len(fake_k8s.requests()) == before  # no cluster was contacted
    strict(docs)
    kinds = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert kinds == [
        ("Deployment", "echo-k8s-executor"),
        ("Service", "echo-k8s-executor"),
        ("Deployment", "echo-k8s-controller"),
        ("Service", "echo-k8s-controller"),
        ("Deployment", "echo-k8s-i0"),
        ("Deployment", "echo-k8s-i1"),
    ]
    instance = by_key(docs)[("Deployment", f"aios-{gpu_cluster.id}", "echo-k8s-i0")]
    pod = instance["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {names.NODE_ID: "gpu-1"}
    assert pod["containers"][0]["image"] == "registry.example.com/aios/echo:1.0.0"
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"

    # The driver, given the same specs through create_block/create_workload, applies the
    # very same objects.
    node = gpu_cluster.nodes.get(pk="gpu-1")
    specs = render.block_specs(BLOCK, gpu_cluster, node, component_path=COMPONENT)
    driver = get_driver(gpu_cluster)
    with django_capture_on_commit_callbacks(execute=True):
        executor = next(s for s in specs if s.kind == WorkloadKind.EXECUTOR)
        instances = [s for s in specs if s.kind == WorkloadKind.INSTANCE]
        others = [s for s in specs if s not in instances and s is not executor]
        driver.create_block("echo-k8s", executor=executor, instances=instances)
        for spec in others:
            driver.create_workload(spec)
    assert Workload.objects.filter(block_id="echo-k8s").count() == 4
    for doc in docs:
        meta = doc["metadata"]
        assert fake_k8s.get(doc["kind"], meta["namespace"], meta["name"]) == doc


def test_a_third_party_block_renders_its_init_workload_as_a_deployment(gpu_cluster) -> None:
    spec = json.loads(Path(BLOCK).read_text())
    spec["body"]["spec"]["values"]["blockComponentURI"] = "model.tri:1.0.0-stable"
    path = Path(gpu_cluster.id + "-tri.json")
    try:
        path.write_text(json.dumps(spec))
        docs = run(
            "--kind", "block", "--spec", str(path), "--node", "gpu-1",
            "--component", THIRD_PARTY,
        )  # fmt: skip
    finally:
        path.unlink(missing_ok=True)
    strict(docs)
    init = by_key(docs)[("Deployment", f"aios-{gpu_cluster.id}", "echo-k8s-init")]
    container = init["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example.com/aios/tri-init:1.0.0"
    assert container["command"][:3] == ["python", "-m", "block_sdk.third_party.init"]
    assert init["spec"]["strategy"] == {"type": "Recreate"}


def test_vdag_controller_render_has_a_deployment_and_service_per_replica(gpu_cluster) -> None:
    docs = run(
        "--kind", "vdag-controller", "--id", "ctl-1", "--node", "gpu-1", "--replicas", "2",
        "--vdag-uri", "pose:1.0.0-stable",
    )  # fmt: skip
    strict(docs)
    assert [(d["kind"], d["metadata"]["name"]) for d in docs] == [
        ("Deployment", "vdagc-ctl-1-0"),
        ("Service", "vdagc-ctl-1-0"),
        ("Deployment", "vdagc-ctl-1-1"),
        ("Service", "vdagc-ctl-1-1"),
    ]
    container = docs[0]["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][0] == "vdag-controller"
    assert docs[0]["metadata"]["labels"][names.KIND] == "vdag_controller"


def test_cluster_render_is_what_provisioning_applies(gpu_cluster, fake_k8s) -> None:
    docs = run("--kind", "cluster", "--cluster", gpu_cluster.id)
    strict(docs)
    assert docs == get_driver(gpu_cluster).cluster_manifests()
    for doc in docs:
        meta = doc["metadata"]
        assert fake_k8s.get(doc["kind"], meta.get("namespace"), meta["name"]) == doc
    configmap = by_key(docs)[("ConfigMap", f"aios-{gpu_cluster.id}-system", "aios-node-ids")]
    assert json.loads(configmap["data"]["node-ids.json"]) == {"gpu-1": "gpu-1"}


def test_a_cluster_that_is_not_registered_renders_from_a_config_file(db, tmp_path) -> None:
    config = tmp_path / "k8s.yaml"
    config.write_text("redis: {mode: in-cluster}\nnamespace: aios-demo\n")
    docs = run("--kind", "cluster", "--cluster", "demo", "--config", str(config))
    strict(docs)
    names_ = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("Namespace", "aios-demo") in names_ and ("Deployment", "aios-redis") in names_


def test_a_node_that_is_not_registered_needs_its_cluster(db) -> None:
    with pytest.raises(CommandError, match="--cluster"):
        run("--kind", "block", "--spec", BLOCK, "--node", "nowhere", "--component", COMPONENT)
    docs = run(
        "--kind", "block", "--spec", BLOCK, "--node", "nowhere", "--cluster", "demo",
        "--component", COMPONENT, "--gpus", "3",
    )  # fmt: skip
    instance = next(d for d in docs if d["metadata"]["name"] == "echo-k8s-i0")
    env = {
        e["name"]: e.get("value")
        for e in instance["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["AIOS_GPU_IDS"] == "3"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--kind", "block", "--node", "n1", "--cluster", "c"], "--spec"),
        (["--kind", "block", "--spec", BLOCK, "--cluster", "c"], "--node"),
        (["--kind", "vdag-controller", "--node", "n1", "--cluster", "c"], "--id"),
        (
            ["--kind", "block", "--spec", "/nope.json", "--node", "n", "--cluster", "c"],
            "cannot read",
        ),
        (["--kind", "block", "--spec", BLOCK, "--node", "n", "--cluster", "c"], "not registered"),
        (["--kind", "cluster"], "--cluster"),
    ],
)
def test_bad_invocations_are_clear_errors(db, args, message) -> None:
    with pytest.raises(CommandError, match=message):
        run(*args)


def test_a_spec_file_that_is_not_json_or_yaml_is_a_clear_error(db, tmp_path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not: [valid")
    with pytest.raises(CommandError, match="neither JSON nor YAML"):
        run("--kind", "block", "--spec", str(bad), "--node", "n", "--cluster", "c")


def test_the_rendered_node_is_the_registered_one(gpu_cluster) -> None:
    services.register_node(gpu_cluster, {"id": "cpu-9"})
    docs = run("--kind", "block", "--spec", BLOCK, "--node", "cpu-9", "--component", COMPONENT)
    for doc in docs:
        assert doc["metadata"]["namespace"] == f"aios-{gpu_cluster.id}"
        assert doc["metadata"]["labels"][names.NODE_ID] == "cpu-9"
