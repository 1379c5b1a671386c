"""The driver's apply, read and delete paths against a fake Kubernetes API server (kmock):
what the server received, idempotency, clean removal, status read-back, node onboarding."""

from __future__ import annotations

import pytest

from apps.clusters import services
from apps.clusters.choices import NodeStatus, RestartPolicy, WorkloadKind, WorkloadStatus
from apps.clusters.drivers import get_driver
from apps.clusters.drivers.base import WorkloadSpec
from apps.clusters.drivers.k8s import manifests, names
from apps.clusters.drivers.k8s.client import KubeClient
from apps.clusters.drivers.kubernetes import KubernetesDriver
from apps.clusters.models import GPU, Node, Workload
from apps.core.errors import ValidationFailed
from tests.k8s.conftest import k8s_node, make_pod


def provisioned(cluster, fake_k8s, *nodes) -> KubernetesDriver:
    for node in nodes or (k8s_node("worker-1"),):
        fake_k8s.put("Node", node)
    driver = get_driver(cluster)
    driver.provision_cluster()
    return get_driver(cluster)


def executor_spec(block_id: str = "b1", node_id: str = "worker-1") -> WorkloadSpec:
    return WorkloadSpec(
        kind=WorkloadKind.EXECUTOR,
        entry_point="block_sdk.executor",
        args=["--block-id", block_id],
        ports={"grpc": 0, "http": 0},
        node_id=node_id,
    )


def instance_spec(node_id: str = "gpu-1", gpus=(0,), **extra) -> WorkloadSpec:
    return WorkloadSpec(
        kind=WorkloadKind.INSTANCE,
        entry_point="block_sdk.instance",
        image="registry.example.com/echo:1.0.0",
        ports={"http": 18001},
        node_id=node_id,
        gpu_ids=list(gpus),
        resources={"gpus": len(gpus)},
        restart_policy=RestartPolicy.NEVER,
        **extra,
    )


def received(fake_k8s, namespace: str) -> dict[tuple[str, str], dict]:
    return {
        (kind, o["metadata"]["name"]): o
        for kind in ("Deployment", "Service", "Job", "HorizontalPodAutoscaler")
        for o in fake_k8s.objects(kind, namespace)
    }


# -- provisioning and nodes ----------------------------------------------------------------------
def test_provisioning_discovers_labels_and_registers_the_nodes(cluster, fake_k8s) -> None:
    fake_k8s.put("Node", k8s_node("worker-1"))
    fake_k8s.put("Node", k8s_node("gpu-1", gpus=2, gpu_product="NVIDIA-A100-SXM4-80GB"))
    fake_k8s.put("Node", k8s_node("labelled", labels={"nodeID": "edge-7"}))
    result = get_driver(cluster).provision_cluster()

    assert result["registered"] == ["worker-1", "gpu-1", "edge-7"]
    nodes = {n.id: n for n in Node.objects.filter(cluster=cluster)}
    assert set(nodes) == {"worker-1", "gpu-1", "edge-7"}
    assert all(n.status == NodeStatus.READY for n in nodes.values())
    gpu_node = nodes["gpu-1"]
    assert gpu_node.vcpus == {"count": 8.0}
    assert gpu_node.memory == 32 * 1024
    assert gpu_node.node_metadata["kubernetes"]["allocatable"]["gpus"] == 2
    gpus = list(GPU.objects.filter(node=gpu_node).order_by("index"))
    assert [(g.index, g.model, g.memory_mb, g.declared) for g in gpus] == [
        (0, "NVIDIA-A100-SXM4-80GB", 81920, False),
        (1, "NVIDIA-A100-SXM4-80GB", 81920, False),
    ]
    cluster.refresh_from_db()
    assert cluster.gpus["count"] == 2
    for name, node_id in (("worker-1", "worker-1"), ("gpu-1", "gpu-1"), ("labelled", "edge-7")):
        labels = fake_k8s.get("Node", None, name)["metadata"]["labels"]
        assert labels[names.NODE_ID] == node_id
        assert labels[names.CLUSTER_ID] == cluster.id
    assert cluster.config["urlMap"]["dataPlaneRedis"] == result["redis"]["url"]


def test_provisioning_applies_exactly_the_rendered_cluster_objects(cluster, fake_k8s) -> None:
    driver = provisioned(cluster, fake_k8s)
    expected = driver.cluster_manifests()
    for doc in expected:
        meta = doc["metadata"]
        got = fake_k8s.get(doc["kind"], meta.get("namespace"), meta["name"])
        assert got == doc, f"{doc['kind']} {meta['name']}"
    applies = [r for r in fake_k8s.requests() if r["method"] == "PATCH" and "force" in r["query"]]
    assert len(applies) == len(expected)
    assert all(r["content_type"] == "application/apply-patch+yaml" for r in applies)
    assert all(r["query"]["fieldManager"] == "aios" for r in applies)
    assert all(r["authorization"] == "Bearer test-token" for r in fake_k8s.requests())


def test_provisioning_twice_changes_nothing(cluster, fake_k8s) -> None:
    driver = provisioned(cluster, fake_k8s)
    before = len(fake_k8s.requests())
    result = driver.provision_cluster()
    assert fake_k8s.writes(since=before) == []
    assert result["applied"] == {"unchanged": len(driver.cluster_manifests())}
    assert result["registered"] == []


def test_a_namespace_aios_did_not_create_is_used_but_never_changed(make_cluster, fake_k8s) -> None:
    cluster = make_cluster(kubernetes={"namespace": "team-ml"})
    fake_k8s.put("Namespace", {"metadata": {"name": "team-ml", "labels": {"team": "ml"}}})
    result = provisioned(cluster, fake_k8s).provision_cluster()
    assert result["applied"].get("adopted") == 1
    assert fake_k8s.get("Namespace", None, "team-ml")["metadata"]["labels"] == {"team": "ml"}


def test_a_foreign_object_with_our_name_is_never_overwritten(cluster, fake_k8s) -> None:
    foreign = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "aios-workload", "namespace": f"aios-{cluster.id}"},
    }
    fake_k8s.put("ServiceAccount", foreign)
    fake_k8s.put("Node", k8s_node("worker-1"))
    from apps.clusters.drivers.base import DriverError

    with pytest.raises(DriverError) as caught:
        get_driver(cluster).provision_cluster()
    assert caught.value.code == "kubernetes_object_conflict"
    got = fake_k8s.get("ServiceAccount", f"aios-{cluster.id}", "aios-workload")
    assert "labels" not in got["metadata"]


def test_a_node_joining_later_is_added_labelled_and_listed(cluster, fake_k8s) -> None:
    driver = provisioned(cluster, fake_k8s)
    fake_k8s.put("Node", k8s_node("ip-10-0-3-7.ec2.internal", gpus=1))
    node = services.register_node(
        cluster,
        {"id": "late-1", "nodeMetadata": {"kubernetesNodeName": "ip-10-0-3-7.ec2.internal"}},
    )
    result = driver.add_node(node)
    assert result["ready"] is True
    assert result["kubernetes_node"] == "ip-10-0-3-7.ec2.internal"
    node.refresh_from_db()
    assert node.status == NodeStatus.READY and node.gpus.count() == 1
    labels = fake_k8s.get("Node", None, "ip-10-0-3-7.ec2.internal")["metadata"]["labels"]
    assert labels[names.NODE_ID] == "late-1"
    table = fake_k8s.get("ConfigMap", f"aios-{cluster.id}-system", manifests.NODE_IDS_CONFIGMAP)
    assert '"ip-10-0-3-7.ec2.internal": "late-1"' in table["data"][manifests.NODE_IDS_FILE]


def test_a_node_with_no_kubernetes_node_waits_pending_and_says_why(cluster, fake_k8s) -> None:
    driver = provisioned(cluster, fake_k8s)
    node = services.register_node(cluster, {"id": "not-there"})
    result = driver.add_node(node)
    assert result["ready"] is False
    node.refresh_from_db()
    assert node.status == NodeStatus.PENDING
    assert "aios.io/node-id=not-there" in node.status_message


def test_a_node_labelled_for_another_aios_cluster_is_not_taken(cluster, fake_k8s) -> None:
    fake_k8s.put("Node", k8s_node("shared", labels={names.CLUSTER_ID: "someone-else"}))
    result = get_driver(cluster).provision_cluster()
    assert result["registered"] == []
    assert "someone-else" in result["conflicts"][0]
    labels = fake_k8s.get("Node", None, "shared")["metadata"]["labels"]
    assert labels[names.CLUSTER_ID] == "someone-else"


# -- workloads -------------------------------------------------------------------------------------
def test_a_block_becomes_deployments_and_a_service_exactly_as_rendered(
    cluster, fake_k8s, django_capture_on_commit_callbacks
) -> None:
    driver = provisioned(cluster, fake_k8s, k8s_node("worker-1"), k8s_node("gpu-1", gpus=2))
    with django_capture_on_commit_callbacks(execute=True):
        block = driver.create_block(
            "b1",
            executor=executor_spec(),
            instances=[instance_spec(gpus=(0,), instance_id="b1-i0"), instance_spec(gpus=(1,))],
        )
    ns = f"aios-{cluster.id}"
    objects = received(fake_k8s, ns)
    rows = list(Workload.objects.filter(block_id="b1"))
    assert len(rows) == 3
    for row in rows:
        for doc in driver.manifests_for(row):
            assert objects[(doc["kind"], doc["metadata"]["name"])] == doc
    assert set(objects) == {
        ("Deployment", "b1-executor"),
        ("Service", "b1-executor"),
        ("Deployment", "b1-i0"),
        ("Deployment", names.workload_object_name(block.instances[1].id)),
    }
    executor = Workload.objects.get(pk="b1-executor")
    assert executor.ports == {"grpc": 50051, "http": 18000}
    assert driver.endpoints(executor) == {
        "grpc": f"b1-executor.{ns}.svc:50051",
        "http": f"b1-executor.{ns}.svc:18000",
    }
    instance = objects[("Deployment", "b1-i0")]["spec"]["template"]["spec"]
    assert instance["nodeSelector"] == {names.NODE_ID: "gpu-1"}
    assert instance["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_applying_a_workload_twice_changes_nothing(
    cluster, fake_k8s, django_capture_on_commit_callbacks
) -> None:
    driver = provisioned(cluster, fake_k8s)
    with django_capture_on_commit_callbacks(execute=True):
        driver.create_workload(executor_spec())
    row = (
        Workload.objects.get(pk="b1-executor")
        if Workload.objects.filter(pk="b1-executor").exists()
        else Workload.objects.get(block_id="")
    )
    before = len(fake_k8s.requests())
    driver.realize(row)
    assert fake_k8s.writes(since=before) == []
    result = driver.sync()
    assert result["actions"]["applied"] == []
    assert fake_k8s.writes(since=before) == []


def test_a_restart_rolls_the_pods_with_one_apply(
    cluster, fake_k8s, django_capture_on_commit_callbacks
) -> None:
    driver = provisioned(cluster, fake_k8s)
    with django_capture_on_commit_callbacks(execute=True):
        ref = driver.create_workload(executor_spec())
    before = len(fake_k8s.requests())
    with django_capture_on_commit_callbacks(execute=True):
        driver.restart_workload(ref.id)
    writes = fake_k8s.writes(since=before)
    assert [(w["method"], w["path"].rsplit("/", 2)[-2]) for w in writes] == [
        ("PATCH", "deployments")
    ]
    deployment = fake_k8s.get("Deployment", f"aios-{cluster.id}", ref.id)
    assert deployment["spec"]["template"]["metadata"]["annotations"][names.GENERATION] == "2"


def test_stopping_a_function_scales_to_zero_and_prunes_its_hpa(
    cluster, fake_k8s, django_capture_on_commit_callbacks
) -> None:
    driver = provisioned(cluster, fake_k8s)
    spec = WorkloadSpec(
        kind=WorkloadKind.FUNCTION,
        entry_point="block_sdk.policy_runtime.function_server",
        ports={"http": 10260},
        node_id="worker-1",
        resources={"autoscaling": {"min_replicas": 1, "max_replicas": 4}},
    )
    with django_capture_on_commit_callbacks(execute=True):
        (ref,) = driver.create_function("scorer", spec)
    ns = f"aios-{cluster.id}"
    assert fake_k8s.get("HorizontalPodAutoscaler", ns, ref.id)["spec"]["maxReplicas"] == 4
    with django_capture_on_commit_callbacks(execute=True):
        driver.set_desired_state(ref.id, "stopped")
    assert fake_k8s.get("HorizontalPodAutoscaler", ns, ref.id) is None
    assert fake_k8s.get("Deployment", ns, ref.id)["spec"]["replicas"] == 0


def test_a_spec_kubernetes_cannot_run_is_refused_before_a_row_is_written(cluster, fake_k8s) -> None:
    driver = provisioned(cluster, fake_k8s)
    bad = executor_spec()
    bad.probes = {"liveness": {"http": {"port": "admin"}}}
    with pytest.raises(ValidationFailed):
        driver.create_workload(bad)
    assert not Workload.objects.filter(cluster=cluster).exists()


def test_removal_deletes_only_that_workloads_objects_and_finishes_when_pods_are_gone(
    make_cluster, fake_k8s, django_capture_on_commit_callbacks
) -> None:
    cluster = make_cluster()
    driver = provisioned(cluster, fake_k8s, k8s_node("worker-1"), k8s_node("gpu-1", gpus=1))
    with django_capture_on_commit_callbacks(execute=True):
        driver.create_block("b1", executor=executor_spec(), instances=[instance_spec()])
        driver.create_block("b2", executor=executor_spec("b2"), instances=[])
    ns = f"aios-{cluster.id}"
    # Someone else's Deployment in our namespace, and another AIOS cluster's.
    fake_k8s.put(
        "Deployment",
        {"metadata": {"name": "b1-executor-tools", "namespace": ns, "labels": {"app": "tools"}}},
    )
    other_labels = {
        names.MANAGED_BY: "aios",
        names.CLUSTER_ID: "other-cluster",
        names.WORKLOAD_ID: "b1-executor",
    }
    fake_k8s.put("Deployment", {"metadata": {"name": "x", "namespace": ns, "labels": other_labels}})
    executor = fake_k8s.get("Deployment", ns, "b1-executor")
    fake_k8s.put("Pod", make_pod(executor))

    with django_capture_on_commit_callbacks(execute=True):
        removed = driver.remove_block("b1")
    assert removed == 2
    left = set(received(fake_k8s, ns))
    assert left == {
        ("Deployment", "b2-executor"),
        ("Service", "b2-executor"),
        ("Deployment", "b1-executor-tools"),
        ("Deployment", "x"),
    }
    # The executor's pod is still terminating: its row waits (GPU reservation too).
    driver.sync()
    assert Workload.objects.filter(pk="b1-executor", remove_requested=True).exists()
    fake_k8s.collect_garbage(ns)
    driver.wait_gone(["b1-executor"], timeout_s=5)
    assert not Workload.objects.filter(block_id="b1").exists()
    deletes = [r for r in fake_k8s.requests() if r["method"] == "DELETE"]
    assert all(r["query"] == {"propagationPolicy": "Background"} for r in deletes)


def test_remove_with_wait_returns_once_the_rows_are_gone(
    cluster, fake_k8s, django_capture_on_commit_callbacks
) -> None:
    driver = provisioned(cluster, fake_k8s)
    with django_capture_on_commit_callbacks(execute=True):
        ref = driver.create_workload(executor_spec())
    driver.remove_workloads(Workload.objects.filter(pk=ref.id), wait=True, timeout_s=5)
    assert not Workload.objects.filter(pk=ref.id).exists()
    assert fake_k8s.get("Deployment", f"aios-{cluster.id}", ref.id) is None


# -- reading back -------------------------------------------------------------------------------
def test_status_reads_pods_into_the_rows_like_the_node_agent(
    cluster, fake_k8s, django_capture_on_commit_callbacks
) -> None:
    driver = provisioned(cluster, fake_k8s, k8s_node("worker-1"), k8s_node("gpu-1", gpus=1))
    with django_capture_on_commit_callbacks(execute=True):
        driver.create_block(
            "b1", executor=executor_spec(), instances=[instance_spec(instance_id="b1-i0")]
        )
    ns = f"aios-{cluster.id}"
    fake_k8s.put("Pod", make_pod(fake_k8s.get("Deployment", ns, "b1-executor"), restarts=1))
    fake_k8s.put(
        "Pod",
        make_pod(
            fake_k8s.get("Deployment", ns, "b1-i0"),
            node="gpu-1",
            ready=False,
            restarts=3,
            waiting={"reason": "CrashLoopBackOff", "message": "back-off"},
            last_terminated={"exitCode": 137, "reason": "OOMKilled"},
        ),
    )
    doc = driver.status()
    assert doc["api"] == {"reachable": True}
    executor = Workload.objects.get(pk="b1-executor")
    assert (executor.status, executor.restarts) == (WorkloadStatus.RUNNING, 1)
    assert executor.started_at is not None and executor.observed_at is not None
    instance = Workload.objects.get(pk="b1-i0")
    # restart policy "never": the first crash is a failure the health checker acts on
    assert instance.status == WorkloadStatus.FAILED
    assert instance.exit_code == 137 and "OOMKilled" in instance.last_error
    assert doc["pods"]["b1-i0"]["pods"][0]["node_id"] == "gpu-1"
    assert doc["workloads"]["by_status"] == {"running": 1, "failed": 1}
    assert doc["ready_nodes"] == 2


def test_sync_reapplies_what_was_deleted_and_removes_orphans_only(
    cluster, fake_k8s, django_capture_on_commit_callbacks
) -> None:
    driver = provisioned(cluster, fake_k8s)
    with django_capture_on_commit_callbacks(execute=True):
        ref = driver.create_workload(executor_spec())
    ns = f"aios-{cluster.id}"
    fake_k8s.remove("Deployment", ns, ref.id)  # someone deleted it by hand
    orphan_labels = manifests.object_labels(
        manifests.WorkloadView(
            id="gone-1", kind="executor", cluster_id=cluster.id, node_id="worker-1"
        )
    )
    fake_k8s.put(
        "Deployment", {"metadata": {"name": "gone-1", "namespace": ns, "labels": orphan_labels}}
    )
    fake_k8s.put(
        "Deployment", {"metadata": {"name": "keep", "namespace": ns, "labels": {"a": "b"}}}
    )
    actions = driver.sync()["actions"]
    assert actions["applied"] == [ref.id]
    assert actions["orphans_deleted"] == 1
    assert fake_k8s.get("Deployment", ns, ref.id) is not None
    assert fake_k8s.get("Deployment", ns, "gone-1") is None
    assert fake_k8s.get("Deployment", ns, "keep") is not None


def test_a_node_that_goes_not_ready_is_not_placed_on(cluster, fake_k8s) -> None:
    driver = provisioned(cluster, fake_k8s, k8s_node("worker-1"), k8s_node("worker-2"))
    fake_k8s.put("Node", k8s_node("worker-1", ready=False))
    driver.sync()
    assert Node.objects.get(pk="worker-1").status == NodeStatus.NOT_READY
    assert driver.pick_node(executor_spec()).id == "worker-2"


def test_a_t3_job_result_is_read_back_from_its_pod(
    cluster, fake_k8s, django_capture_on_commit_callbacks
) -> None:
    driver = provisioned(cluster, fake_k8s)
    spec = WorkloadSpec(
        kind=WorkloadKind.JOB, entry_point="block_sdk.policy_runtime.job", node_id="worker-1"
    )
    with django_capture_on_commit_callbacks(execute=True):
        ref = driver.run_job(spec)
    ns = f"aios-{cluster.id}"
    job = fake_k8s.get("Job", ns, ref.id)
    assert job["spec"]["backoffLimit"] == 0
    job["status"] = {"succeeded": 1, "completionTime": "2026-01-01T00:01:00Z"}
    fake_k8s.put("Job", job)
    fake_k8s.put(
        "Pod",
        make_pod(
            job, phase="Succeeded", terminated={"exitCode": 0, "message": '{"allowed": true}'}
        ),
    )
    driver.sync()
    assert Workload.objects.get(pk=ref.id).status == WorkloadStatus.EXITED
    result = driver.job_result(ref.id)
    assert (result["result"], result["source"]) == ({"allowed": True}, "termination-message")


# -- teardown -------------------------------------------------------------------------------------
def test_teardown_deletes_everything_it_created_and_nothing_else(
    make_cluster, fake_k8s, django_capture_on_commit_callbacks
) -> None:
    cluster = make_cluster(kubernetes={"redis": {"mode": "in-cluster"}})
    driver = provisioned(cluster, fake_k8s, k8s_node("worker-1"))
    with django_capture_on_commit_callbacks(execute=True):
        driver.create_workload(executor_spec())
    fake_k8s.put("Namespace", {"metadata": {"name": "unrelated"}})
    fake_k8s.put(
        "Deployment", {"metadata": {"name": "theirs", "namespace": "unrelated", "labels": {}}}
    )
    fake_k8s.put("ClusterRole", {"metadata": {"name": "cluster-admin"}})
    result = driver.teardown_cluster(timeout_s=3)

    assert result["kept_namespaces"] == []
    assert fake_k8s.get("Namespace", None, f"aios-{cluster.id}") is None
    assert fake_k8s.get("Namespace", None, f"aios-{cluster.id}-system") is None
    for doc in driver.cluster_manifests():
        meta = doc["metadata"]
        assert fake_k8s.get(doc["kind"], meta.get("namespace"), meta["name"]) is None
    assert fake_k8s.get("Namespace", None, "unrelated") is not None
    assert fake_k8s.get("Deployment", "unrelated", "theirs") is not None
    assert fake_k8s.get("ClusterRole", None, "cluster-admin") is not None
    labels = fake_k8s.get("Node", None, "worker-1")["metadata"]["labels"]
    assert names.NODE_ID not in labels and names.CLUSTER_ID not in labels
    assert not Workload.objects.filter(cluster=cluster).exists()


def test_teardown_keeps_a_namespace_that_holds_someone_elses_objects(cluster, fake_k8s) -> None:
    driver = provisioned(cluster, fake_k8s)
    ns = f"aios-{cluster.id}"
    fake_k8s.put("ConfigMap", {"metadata": {"name": "notes", "namespace": ns}})
    result = driver.teardown_cluster(timeout_s=1)
    assert result["kept_namespaces"] == [f"{ns} (holds ConfigMap notes)"]
    assert fake_k8s.get("ConfigMap", ns, "notes") is not None
    assert fake_k8s.get("ServiceAccount", ns, "aios-workload") is None


def test_removing_a_node_unlabels_it_and_drops_it_from_the_node_table(cluster, fake_k8s) -> None:
    driver = provisioned(cluster, fake_k8s, k8s_node("worker-1"), k8s_node("worker-2"))
    node = Node.objects.get(pk="worker-2")
    result = driver.remove_node(node, timeout_s=2)
    assert result["kubernetes_node"] == "worker-2"
    labels = fake_k8s.get("Node", None, "worker-2")["metadata"]["labels"]
    assert names.NODE_ID not in labels
    table = fake_k8s.get("ConfigMap", f"aios-{cluster.id}-system", manifests.NODE_IDS_CONFIGMAP)
    assert "worker-2" not in table["data"][manifests.NODE_IDS_FILE]


# -- failures -----------------------------------------------------------------------------------
def test_an_unreachable_api_server_is_recorded_not_raised(
    cluster, fake_k8s, django_capture_on_commit_callbacks
) -> None:
    driver = provisioned(cluster, fake_k8s)
    fake_k8s.stop()
    with django_capture_on_commit_callbacks(execute=True):
        ref = driver.create_workload(executor_spec())
    row = Workload.objects.get(pk=ref.id)
    assert row.last_error.startswith("kubernetes: the Kubernetes API server did not answer")
    doc = driver.status()
    assert doc["api"]["reachable"] is False
    assert doc["api"]["code"] == "kubernetes_unreachable"


def test_a_cluster_without_kubeconfig_says_how_to_fix_it(make_cluster) -> None:
    cluster = make_cluster()
    cluster.set_kubeconfig("")
    cluster.save()
    doc = get_driver(cluster).status()
    assert doc["api"]["code"] == "kubeconfig_invalid"
    assert "kube_config_data" in doc["api"]["error"]


def test_the_kubeconfig_is_stored_encrypted_and_its_cert_files_do_not_outlive_the_client(
    cluster, fake_k8s
) -> None:
    import base64
    import os

    assert "server:" not in cluster.kubeconfig_encrypted
    pem = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    # (the client reads a CA for https servers only; nothing connects here)
    text = fake_k8s.kubeconfig().replace(
        f"server: {fake_k8s.url}",
        f"certificate-authority-data: {base64.b64encode(pem).decode()}\n"
        "    server: https://127.0.0.1:1",
    )
    client = KubeClient.from_kubeconfig(text)
    tmpdir = client._tmpdir
    assert client.api.configuration.ca_cert_data == pem.decode()
    assert os.listdir(tmpdir) == []  # the CA went to memory
    client.close()
    assert not os.path.exists(tmpdir)


def test_a_write_the_api_server_answers_404_is_an_error_not_a_success(fake_k8s) -> None:
    from apps.clusters.drivers.k8s.client import KubeApiError

    path = "/apis/example.com/v1/namespaces/x/widgets/w"  # unknown to the server: 404
    with KubeClient.from_kubeconfig(fake_k8s.kubeconfig()) as api:
        assert api.request("GET", path) is None  # a read: "not there"
        with pytest.raises(KubeApiError) as caught:
            api.request("PATCH", path, body={}, missing_ok=False)  # a write: a failure
    assert caught.value.http_status == 404
