"""REST shapes of the vdags app: vDAGs and vDAG controllers as the reference's registry
documents name them (§1.13), plus status."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.vdags.choices import ControllerStatus, PolicyExecutionMode, VDagStatus
from apps.vdags.models import QualitySample, VDag, VDagController


def _one_of(values: list[str]) -> dict:
    # A pattern rather than an enum: several "status" choice sets would collide in the
    # enum component names the schema generator derives from the field name.
    return {
        "type": "string",
        "pattern": f"^({'|'.join(values)})$",
        "description": " | ".join(values),
    }


@extend_schema_field(_one_of(list(VDagStatus.values)))
class VDagStatusField(serializers.CharField):
    pass


@extend_schema_field(_one_of(list(ControllerStatus.values)))
class ControllerStatusField(serializers.CharField):
    pass


class VDagSerializer(serializers.ModelSerializer):
    vdagURI = serializers.CharField(source="vdag_uri", read_only=True)
    vdag_name = serializers.CharField(source="name", read_only=True)
    vdag_version = serializers.SerializerMethodField()
    discoveryTags = serializers.JSONField(source="discovery_tags", read_only=True)
    status = VDagStatusField(read_only=True)
    owner = serializers.CharField(source="owner.username", read_only=True, allow_null=True)
    controllers = serializers.SerializerMethodField()

    class Meta:
        model = VDag
        fields = [
            "vdagURI",
            "vdag_name",
            "vdag_version",
            "status",
            "status_reason",
            "discoveryTags",
            "controller",
            "nodes",
            "graph",
            "assignment",
            "compiled_graph",
            "block_ids",
            "nested_vdags",
            "metadata",
            "controllers",
            "owner",
            "last_task_id",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_vdag_version(self, obj: VDag) -> dict[str, str]:
        return {"version": obj.version, "release-tag": obj.release_tag}

    def get_controllers(self, obj: VDag) -> list[str]:
        return [c.pk for c in obj.controllers.all()]


class VDagListSerializer(VDagSerializer):
    """The list view leaves the (possibly large) compiled graph out."""

    class Meta(VDagSerializer.Meta):
        fields = [f for f in VDagSerializer.Meta.fields if f not in ("compiled_graph", "nodes")]
        read_only_fields = fields


class ControllerConfigSerializer(serializers.Serializer):
    policy_execution_mode = serializers.ChoiceField(
        choices=PolicyExecutionMode.choices, required=False, default=PolicyExecutionMode.LOCAL
    )
    replicas = serializers.IntegerField(min_value=1, max_value=16, required=False, default=1)
    policies = serializers.JSONField(
        required=False,
        help_text="quotaChecker / qualityChecker / healthChecker rules; default: the vDAG "
        "spec's controller.policies",
    )
    request_timeout_s = serializers.FloatField(required=False)
    health_interval_s = serializers.FloatField(required=False)
    metrics_interval_s = serializers.FloatField(required=False)
    quality_sample_rate = serializers.FloatField(required=False)
    node_id = serializers.CharField(required=False, help_text="pin to a node of the cluster")


class VDagControllerCreateSerializer(serializers.Serializer):
    vdag_controller_id = serializers.CharField()
    vdag_uri = serializers.CharField()
    cluster_id = serializers.CharField()
    config = ControllerConfigSerializer(required=False)
    metadata = serializers.DictField(required=False)
    search_tags = serializers.ListField(child=serializers.CharField(), required=False)


class VDagControllerSerializer(serializers.ModelSerializer):
    vdag_uri = serializers.CharField(source="vdag_id", read_only=True)
    cluster_id = serializers.CharField(read_only=True)
    status = ControllerStatusField(read_only=True)
    owner = serializers.CharField(source="owner.username", read_only=True, allow_null=True)

    class Meta:
        model = VDagController
        fields = [
            "vdag_controller_id",
            "vdag_uri",
            "cluster_id",
            "status",
            "status_reason",
            "public_url",
            "management_url",
            "endpoints",
            "config",
            "metadata",
            "search_tags",
            "owner",
            "last_task_id",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class ControllerAcceptedSerializer(VDagControllerSerializer):
    task_id = serializers.SerializerMethodField()
    status_url = serializers.SerializerMethodField()

    class Meta(VDagControllerSerializer.Meta):
        fields = [*VDagControllerSerializer.Meta.fields, "task_id", "status_url"]
        read_only_fields = fields

    def get_task_id(self, obj: VDagController) -> str | None:
        return str(obj.last_task_id) if obj.last_task_id else None

    def get_status_url(self, obj: VDagController) -> str | None:
        return f"/api/v1/tasks/{obj.last_task_id}/" if obj.last_task_id else None


class RemovedSerializer(serializers.Serializer):
    vdag_controller_id = serializers.CharField()
    removed = serializers.BooleanField()
    workloads = serializers.IntegerField()


class QualitySampleSerializer(serializers.ModelSerializer):
    class Meta:
        model = QualitySample
        fields = [
            "id",
            "vdag_controller_id",
            "vdag_uri",
            "ts",
            "session_id",
            "seq_no",
            "request",
            "response",
            "policy",
            "policy_result",
        ]
        read_only_fields = fields
