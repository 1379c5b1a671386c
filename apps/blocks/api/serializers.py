"""REST shapes of the blocks app. Reads render the block document (AIOS camelCase keys for
spec fields, plus status, instances and endpoints); writes are small request serializers."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from apps.blocks.choices import MGMT_SERVICES
from apps.blocks.models import Block, Instance


def instance_document(instance: Instance) -> dict[str, Any]:
    return {
        "id": instance.instance_id,
        "node": instance.node_id,
        "gpus": list(instance.gpus or []),
        "health": instance.health,
        "status": instance.status,
        "last_health_at": instance.last_health_at.isoformat() if instance.last_health_at else None,
        "consecutive_failures": instance.consecutive_failures,
        "host": instance.host,
        "http_port": instance.http_port,
        "requests_processed": instance.requests_processed,
        "requests_failed": instance.requests_failed,
        "replaces": instance.replaces or None,
        "created_at": instance.created_at.isoformat() if instance.created_at else None,
    }


def block_document(block: Block) -> dict[str, Any]:
    instances = [
        instance_document(i) for i in sorted(block.instances.all(), key=lambda i: i.created_at)
    ]
    return {
        "id": block.id,
        "blockId": block.id,
        "blockComponentURI": block.component_uri,
        "cluster": block.cluster_id,
        "status": block.status,
        "status_reason": block.status_reason,
        "minInstances": block.min_instances,
        "maxInstances": block.max_instances,
        "instances": instances,
        "endpoints": block.endpoints or {},
        "blockInitData": block.block_init_data,
        "initSettings": block.init_settings,
        "parameters": block.parameters,
        "policies": block.policies,
        "blockMetadata": block.block_metadata,
        "inputProtocol": block.input_protocol,
        "outputProtocol": block.output_protocol,
        "tags": block.tags,
        "allocation": block.allocation,
        "last_task_id": str(block.last_task_id) if block.last_task_id else None,
        "last_scale_at": block.last_scale_at.isoformat() if block.last_scale_at else None,
        "owner": block.owner.username if block.owner_id else None,
        "created_at": block.created_at.isoformat() if block.created_at else None,
        "updated_at": block.updated_at.isoformat() if block.updated_at else None,
    }


class InstanceSerializer(serializers.Serializer):
    id = serializers.CharField()
    node = serializers.CharField(allow_null=True)
    gpus = serializers.ListField(child=serializers.IntegerField())
    health = serializers.CharField()
    status = serializers.CharField()
    last_health_at = serializers.DateTimeField(allow_null=True)
    consecutive_failures = serializers.IntegerField()
    host = serializers.CharField()
    http_port = serializers.IntegerField(allow_null=True)
    requests_processed = serializers.IntegerField()
    requests_failed = serializers.IntegerField()
    replaces = serializers.CharField(allow_null=True)
    created_at = serializers.DateTimeField()

    def to_representation(self, instance: Instance) -> dict[str, Any]:
        return instance_document(instance)


class EndpointsSerializer(serializers.Serializer):
    grpc = serializers.CharField(required=False, help_text="host:port of the executor")
    http = serializers.CharField(required=False, help_text="executor HTTP: /health, /metrics")
    controller = serializers.CharField(required=False, help_text="autoscaler / health checker")


class BlockSerializer(serializers.Serializer):
    """The block document: ``status``, ``instances`` (id, node, gpus, health) and
    ``endpoints.grpc``, plus the merged spec values (AIOS camelCase keys)."""

    id = serializers.CharField()
    blockId = serializers.CharField()
    blockComponentURI = serializers.CharField()
    cluster = serializers.CharField(allow_null=True)
    status = serializers.CharField(help_text="pending|allocating|starting|running|failed|removing")
    status_reason = serializers.CharField()
    minInstances = serializers.IntegerField()
    maxInstances = serializers.IntegerField()
    instances = InstanceSerializer(many=True)
    endpoints = EndpointsSerializer()
    blockInitData = serializers.DictField()
    initSettings = serializers.DictField()
    parameters = serializers.DictField()
    policies = serializers.DictField()
    blockMetadata = serializers.DictField()
    inputProtocol = serializers.DictField()
    outputProtocol = serializers.DictField()
    tags = serializers.ListField()
    allocation = serializers.DictField()
    last_task_id = serializers.UUIDField(allow_null=True)
    last_scale_at = serializers.DateTimeField(allow_null=True)
    owner = serializers.CharField(allow_null=True)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()

    def to_representation(self, block: Block) -> dict[str, Any]:
        return block_document(block)


class ScaleSerializer(serializers.Serializer):
    instances = serializers.IntegerField(required=False, min_value=0, help_text="target count")
    delta = serializers.IntegerField(required=False, help_text="+n / -n instances")
    remove = serializers.ListField(
        child=serializers.CharField(), required=False, help_text="instance ids to remove"
    )
    force = serializers.BooleanField(
        required=False, default=False, help_text="allow a count outside min/max (not for tokens)"
    )
    source = serializers.CharField(required=False, default="api", max_length=32)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        given = [k for k in ("instances", "delta", "remove") if k in attrs]
        if len(given) != 1:
            raise serializers.ValidationError(
                "give exactly one of 'instances', 'delta' or 'remove'"
            )
        return attrs


class ScaleResultSerializer(serializers.Serializer):
    block_id = serializers.CharField()
    operation = serializers.CharField(required=False)
    instances = serializers.IntegerField()
    added = serializers.ListField(child=serializers.DictField())
    removed = serializers.ListField(child=serializers.CharField())


class ParametersSerializer(serializers.Serializer):
    parameters = serializers.DictField(help_text="merged into the block's parameters")
    wait_s = serializers.FloatField(
        required=False, default=5.0, min_value=0, max_value=30, help_text="wait for acks"
    )


class ParametersResultSerializer(serializers.Serializer):
    block_id = serializers.CharField()
    version = serializers.IntegerField(required=False)
    acks = serializers.DictField(required=False)
    missing = serializers.ListField(child=serializers.CharField(), required=False)


class MgmtSerializer(serializers.Serializer):
    service = serializers.ChoiceField(choices=list(MGMT_SERVICES))
    mgmt_action = serializers.CharField(max_length=200, help_text="alias: mgmtCommand, action")
    mgmt_data = serializers.JSONField(required=False, help_text="alias: mgmtData, payload")


class MgmtResultSerializer(serializers.Serializer):
    block_id = serializers.CharField()
    service = serializers.CharField()
    action = serializers.CharField()
    result = serializers.JSONField()


class ReplaceSerializer(serializers.Serializer):
    reason = serializers.CharField(required=False, default="", allow_blank=True, max_length=2000)


class ReplaceResultSerializer(serializers.Serializer):
    block_id = serializers.CharField()
    replaced = serializers.CharField()
    instance = serializers.DictField()
    reason = serializers.CharField()


class HealthReportSerializer(serializers.Serializer):
    instances = serializers.DictField(
        child=serializers.DictField(), help_text='{instance_id: {"healthy": bool, ...}}'
    )
    metrics = serializers.DictField(child=serializers.FloatField(), required=False)


class AcceptedSerializer(serializers.Serializer):
    block_id = serializers.CharField()
    status = serializers.CharField()
    task_id = serializers.UUIDField(required=False)
    status_url = serializers.CharField(required=False)
    block_url = serializers.CharField(required=False)
