"""Shapes of the search endpoint."""

from rest_framework import serializers


class SearchRequestSerializer(serializers.Serializer):
    matchType = serializers.CharField(
        help_text="component, cluster, block, vdag, policy, policyFunction, policyGraph, "
        "clusterMetrics, blockMetrics, vdagMetrics (and any type an app registers)"
    )
    filter = serializers.JSONField(
        required=False,
        help_text="{<entity>Query: conditions}: clusterQuery, clusterMetricsQuery, blockQuery, "
        "blockMetricsQuery, vdagQuery, vdagMetricsQuery, componentQuery, policyQuery, …",
    )
    rankingPolicyRule = serializers.JSONField(
        required=False,
        help_text="{policyRuleURI, settings, parameters: {filterRule?, return?}}: ranks the "
        "candidates (sandboxed policy).",
    )
    limit = serializers.IntegerField(required=False, min_value=1, max_value=1000)


class SearchResultSerializer(serializers.Serializer):
    matchType = serializers.CharField()
    count = serializers.IntegerField()
    results = serializers.ListField(child=serializers.JSONField())


class SearchEntitySerializer(serializers.Serializer):
    matchType = serializers.CharField()
    queryKey = serializers.CharField()
    filterKeys = serializers.ListField(child=serializers.CharField())
    fields = serializers.ListField(child=serializers.CharField())
    idKey = serializers.CharField()
    relations = serializers.ListField(child=serializers.JSONField())
