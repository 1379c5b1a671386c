"""REST shapes of the clusters app. Clusters and nodes render as the reference documents
(``services.cluster_document`` / ``node_document``); the kubeconfig is write-only."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from apps.clusters import services
from apps.clusters.choices import (
    ClusterStatus,
    DesiredState,
    DriverName,
    NodeStatus,
    RestartPolicy,
    WorkloadKind,
)
from apps.clusters.models import GPU, GatewayConfig, Workload


class GPUSerializer(serializers.ModelSerializer):
    node_id = serializers.CharField(read_only=True)

    class Meta:
        model = GPU
        fields = ["id", "node_id", "index", "model", "memory_mb", "shared", "uuid", "declared"]


class NodeGPUsSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    memory = serializers.IntegerField(help_text="MB, all GPUs of the node")
    gpus = serializers.ListField(child=serializers.DictField())
    modelNames = serializers.ListField(child=serializers.CharField())
    features = serializers.ListField(child=serializers.JSONField())


class NodeSerializer(serializers.Serializer):
    """A node as the reference names it (sizes in MB)."""

    id = serializers.CharField()
    clusterId = serializers.CharField()
    status = serializers.ChoiceField(choices=NodeStatus.choices)
    statusMessage = serializers.CharField()
    schedulable = serializers.BooleanField()
    gpus = NodeGPUsSerializer()
    vcpus = serializers.DictField()
    memory = serializers.IntegerField()
    swap = serializers.IntegerField()
    storage = serializers.DictField()
    network = serializers.DictField()
    tags = serializers.ListField(child=serializers.CharField())
    nodeMetadata = serializers.DictField()
    lastHeartbeat = serializers.DateTimeField(allow_null=True)
    agent = serializers.DictField()
    createdAt = serializers.DateTimeField()
    updatedAt = serializers.DateTimeField()

    def to_representation(self, instance) -> dict[str, Any]:
        return services.node_document(instance)


class ClusterNodesSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    nodeData = NodeSerializer(many=True)


class ClusterSerializer(serializers.Serializer):
    """A cluster as the reference names it; ``hasKubeconfig`` instead of the secret."""

    id = serializers.CharField()
    regionId = serializers.CharField()
    status = serializers.ChoiceField(choices=ClusterStatus.choices)
    statusMessage = serializers.CharField()
    driver = serializers.ChoiceField(choices=DriverName.choices)
    nodes = ClusterNodesSerializer()
    gpus = serializers.DictField()
    vcpus = serializers.DictField()
    memory = serializers.IntegerField()
    swap = serializers.IntegerField()
    storage = serializers.DictField()
    network = serializers.DictField()
    config = serializers.DictField()
    tags = serializers.ListField(child=serializers.CharField())
    clusterMetadata = serializers.DictField()
    reputation = serializers.IntegerField()
    hasKubeconfig = serializers.BooleanField()
    owner = serializers.CharField(allow_null=True)
    createdAt = serializers.DateTimeField()
    updatedAt = serializers.DateTimeField()

    def to_representation(self, instance) -> dict[str, Any]:
        return services.cluster_document(instance)


class ClusterSpecSerializer(serializers.Serializer):
    """createCluster's values (reference §1.4), or the whole parser envelope. Documentation
    only: the gateway validates the body itself."""

    id = serializers.CharField()
    regionId = serializers.CharField()
    nodes = serializers.JSONField(required=False, help_text='{"count", "nodeData": [node]}')
    gpus = serializers.JSONField(required=False)
    vcpus = serializers.JSONField(required=False)
    memory = serializers.IntegerField(required=False)
    swap = serializers.IntegerField(required=False)
    storage = serializers.JSONField(required=False)
    network = serializers.JSONField(required=False)
    config = serializers.JSONField(required=False, help_text="config.driver: local|kubernetes")
    tags = serializers.ListField(child=serializers.CharField(), required=False)
    clusterMetadata = serializers.JSONField(required=False)
    reputation = serializers.IntegerField(required=False)
    kube_config_data = serializers.JSONField(
        required=False, write_only=True, help_text="kubeconfig; stored encrypted, never returned"
    )


class ClusterUpdateSerializer(serializers.Serializer):
    """Top-level keys merge-patch; dotted keys (``clusterMetadata.creator``) set one value."""

    regionId = serializers.CharField(required=False)
    config = serializers.JSONField(required=False)
    tags = serializers.ListField(child=serializers.CharField(), required=False)
    clusterMetadata = serializers.JSONField(required=False)
    reputation = serializers.IntegerField(required=False)
    kube_config_data = serializers.JSONField(required=False, write_only=True)


class NodeSpecSerializer(serializers.Serializer):
    id = serializers.CharField()
    clusterId = serializers.CharField()
    gpus = serializers.JSONField(
        required=False, help_text='{"count", "memory", "gpus": [{"modelName", "memory"}]}'
    )
    vcpus = serializers.JSONField(required=False)
    memory = serializers.IntegerField(required=False)
    swap = serializers.IntegerField(required=False)
    storage = serializers.JSONField(required=False)
    network = serializers.JSONField(required=False)
    tags = serializers.ListField(child=serializers.CharField(), required=False)
    nodeMetadata = serializers.JSONField(required=False)


class NodeUpdateSerializer(serializers.Serializer):
    tags = serializers.ListField(child=serializers.CharField(), required=False)
    nodeMetadata = serializers.JSONField(required=False)
    schedulable = serializers.BooleanField(required=False)


class ClusterTaskAcceptedSerializer(serializers.Serializer):
    task_id = serializers.UUIDField()
    status_url = serializers.CharField()
    task_type = serializers.CharField()
    cluster_id = serializers.CharField()
    node_id = serializers.CharField(required=False)


class ClusterMgmtCommandSerializer(serializers.Serializer):
    service = serializers.CharField(required=False, default="controller")
    action = serializers.CharField(required=False, help_text="alias: mgmtCommand")
    payload = serializers.JSONField(required=False, help_text="alias: mgmtData")


class ClusterPolicyMapSerializer(serializers.Serializer):
    actionsPolicyMap = serializers.DictField(child=serializers.CharField(allow_blank=True))


class GatewayConfigSerializer(serializers.ModelSerializer):
    class Meta:
        model = GatewayConfig
        fields = ["actions_policy_map", "policy_execution_mode", "policy_executor_id", "updated_at"]
        read_only_fields = ["updated_at"]


class WorkloadSerializer(serializers.ModelSerializer):
    cluster_id = serializers.CharField(read_only=True)
    node_id = serializers.CharField(read_only=True)

    def to_representation(self, instance):
        data = super().to_representation(instance)
        request = self.context.get("request")
        user = getattr(request, "user", None)
        if not (user is not None and user.is_staff):
            # A workload's env may carry credentials handed to that process; only staff read it.
            data["env"] = {key: "***" for key in (data.get("env") or {})}
        return data

    class Meta:
        model = Workload
        fields = [
            "id",
            "cluster_id",
            "node_id",
            "kind",
            "block_id",
            "instance_id",
            "labels",
            "entry_point",
            "command",
            "args",
            "env",
            "image",
            "ports",
            "resources",
            "gpu_ids",
            "probes",
            "desired_state",
            "restart_policy",
            "max_restarts",
            "stop_grace_s",
            "generation",
            "remove_requested",
            "status",
            "pid",
            "exit_code",
            "restarts",
            "last_error",
            "log_path",
            "started_at",
            "finished_at",
            "next_restart_at",
            "observed_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class WorkloadCreateSerializer(serializers.Serializer):
    cluster_id = serializers.CharField()
    node_id = serializers.CharField(required=False, allow_null=True)
    id = serializers.CharField(required=False, allow_null=True)
    kind = serializers.ChoiceField(choices=WorkloadKind.choices)
    entry_point = serializers.CharField(required=False, allow_blank=True, default="")
    command = serializers.ListField(child=serializers.CharField(), required=False, default=list)
    args = serializers.ListField(child=serializers.CharField(), required=False, default=list)
    env = serializers.DictField(child=serializers.CharField(), required=False, default=dict)
    image = serializers.CharField(required=False, allow_blank=True, default="")
    ports = serializers.DictField(child=serializers.IntegerField(), required=False, default=dict)
    resources = serializers.DictField(required=False, default=dict)
    gpu_ids = serializers.ListField(child=serializers.IntegerField(), required=False, default=list)
    restart_policy = serializers.ChoiceField(
        choices=RestartPolicy.choices, required=False, default=RestartPolicy.ALWAYS
    )
    max_restarts = serializers.IntegerField(required=False, default=0, min_value=0)
    stop_grace_s = serializers.FloatField(required=False, default=5.0)
    block_id = serializers.CharField(required=False, allow_blank=True, default="")
    instance_id = serializers.CharField(required=False, allow_blank=True, default="")
    labels = serializers.DictField(required=False, default=dict)


class WorkloadDesiredStateSerializer(serializers.Serializer):
    desired_state = serializers.ChoiceField(choices=DesiredState.choices)
