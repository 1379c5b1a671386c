"""REST shapes of the allocator."""

from __future__ import annotations

from rest_framework import serializers

from apps.allocator.models import Allocation, GPUAllocation


class GPUAllocationSerializer(serializers.ModelSerializer):
    index = serializers.IntegerField(source="gpu.index", read_only=True)
    model = serializers.CharField(source="gpu.model", read_only=True)

    class Meta:
        model = GPUAllocation
        fields = ["index", "model", "exclusive", "memory_mb"]


class AllocationSerializer(serializers.ModelSerializer):
    cluster_id = serializers.CharField(read_only=True)
    node_id = serializers.CharField(read_only=True)
    gpus = GPUAllocationSerializer(source="gpu_allocations", many=True, read_only=True)

    class Meta:
        model = Allocation
        fields = [
            "id",
            "instance_id",
            "block_id",
            "cluster_id",
            "node_id",
            "vcpus",
            "memory_mb",
            "shared_gpus",
            "gpus",
            "policy_rule_uri",
            "score",
            "created_at",
        ]
        read_only_fields = fields


class AllocatedInstanceSerializer(serializers.Serializer):
    instance_id = serializers.CharField(allow_null=True)
    node_id = serializers.CharField()
    gpus = serializers.ListField(child=serializers.IntegerField())
    score = serializers.FloatField()
    allocation_id = serializers.IntegerField(allow_null=True)


class AllocationDecisionSerializer(serializers.Serializer):
    cluster_id = serializers.CharField()
    node_id = serializers.CharField()
    gpus = serializers.ListField(child=serializers.IntegerField())
    score = serializers.FloatField()
    instances = AllocatedInstanceSerializer(many=True)
    dry_run = serializers.BooleanField()
    block_id = serializers.CharField()
    requirements = serializers.DictField()
    candidates = serializers.ListField(child=serializers.DictField())


class AllocatorDryRunRequestSerializer(serializers.Serializer):
    """The createBlock body (envelope or values); ``instances`` overrides minInstances."""

    header = serializers.JSONField(required=False)
    body = serializers.JSONField(required=False)
    blockId = serializers.CharField(required=False)
    minInstances = serializers.IntegerField(required=False)
    policyRulesSpec = serializers.ListField(child=serializers.JSONField(), required=False)
    resourceRequirements = serializers.JSONField(required=False)
    instances = serializers.IntegerField(required=False)
    clusters = serializers.ListField(child=serializers.CharField(), required=False)
