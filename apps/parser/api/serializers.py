"""Shapes of the parser's REST surface."""

from rest_framework import serializers

from apps.parser.models import ParserTask


class ParserTaskSerializer(serializers.ModelSerializer):
    owner = serializers.CharField(source="owner.username", read_only=True, allow_null=True)
    re_executed_from = serializers.PrimaryKeyRelatedField(read_only=True)

    class Meta:
        model = ParserTask
        fields = [
            "id",
            "action",
            "requested_action",
            "template_uri",
            "spec_uri",
            "spec",
            "status",
            "response_status",
            "response_body",
            "duration_ms",
            "owner",
            "re_executed_from",
            "created_at",
            "finished_at",
        ]
        read_only_fields = fields


class WithSpecBodySerializer(serializers.Serializer):
    parameters = serializers.JSONField(
        required=False, help_text="merged into the stored spec's header.parameters"
    )
