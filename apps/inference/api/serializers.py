"""REST shapes of the inference app: request logs and adhoc inference-server deployments."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.inference.choices import DeploymentStatus
from apps.inference.models import InferenceServerDeployment, RequestLog


class RequestLogSerializer(serializers.ModelSerializer):
    """One logged request, as the adhoc server wrote it (``data``, ``query_parameters`` and
    ``output_ptr`` are the packet's JSON strings, unchanged)."""

    class Meta:
        model = RequestLog
        fields = [
            "request_id",
            "session_id",
            "block_id",
            "seq_no",
            "ts",
            "data",
            "query_parameters",
            "output_ptr",
        ]
        read_only_fields = fields


@extend_schema_field(
    {
        "type": "string",
        "pattern": f"^({'|'.join(DeploymentStatus.values)})$",
        "description": " | ".join(DeploymentStatus.values),
    }
)
class DeploymentStatusField(serializers.CharField):
    pass


class DeploymentSerializer(serializers.ModelSerializer):
    cluster_id = serializers.CharField(read_only=True)
    status = DeploymentStatusField(read_only=True)
    inference_server_id = serializers.UUIDField(source="server_id", read_only=True, allow_null=True)
    owner = serializers.CharField(source="owner.username", read_only=True, allow_null=True)
    task_id = serializers.UUIDField(source="last_task_id", read_only=True, allow_null=True)

    class Meta:
        model = InferenceServerDeployment
        fields = [
            "deployment_id",
            "name",
            "cluster_id",
            "status",
            "status_reason",
            "public_url",
            "management_url",
            "endpoints",
            "inference_server_id",
            "config",
            "metadata",
            "tags",
            "owner",
            "task_id",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class DeploymentCreateSerializer(serializers.Serializer):
    deployment_id = serializers.CharField(help_text="slug id; also the workload's name")
    cluster_id = serializers.CharField()
    name = serializers.CharField(required=False, help_text="registry name (default: the id)")
    config = serializers.DictField(
        required=False,
        help_text="replicas, policies {quotaChecker}, policy_execution_mode, request_logging, "
        "log_batch_rows, log_flush_ms, request_timeout_s, session_cache_ttl_s, node_id",
    )
    metadata = serializers.DictField(
        required=False, help_text="registry metadata: region, provider, quota_management_data…"
    )
    tags = serializers.ListField(child=serializers.CharField(), required=False)
