"""REST shapes of the policies system. Input serializers only check shapes; the services
validate meaning (archives, URIs, schemas, graphs) so every caller gets the same rules."""

from __future__ import annotations

import json
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.policies.choices import API_EXECUTION_MODES, ExecutorStatus
from apps.policies.models import (
    FailurePolicyRun,
    PolicyExecutor,
    PolicyFunction,
    PolicyGraph,
    PolicyJob,
    PolicyRule,
)


@extend_schema_field(OpenApiTypes.ANY)
class LenientJSONField(serializers.JSONField):
    """JSON from a JSON body, or a JSON-encoded string from a multipart form field.

    A form value that is not JSON is kept as the plain string (``tags="a,b"`` is valid).
    """

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, str):
            try:
                return json.loads(data)
            except ValueError:
                return data
        return super().to_internal_value(data)


class OwnerField(serializers.SlugRelatedField):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(slug_field="username", read_only=True, **kwargs)


# -- policy rules -------------------------------------------------------------------------------


class PolicyRuleSerializer(serializers.ModelSerializer):
    owner = OwnerField()
    sha256 = serializers.CharField(source="code_sha256", read_only=True)
    archive_url = serializers.SerializerMethodField()

    class Meta:
        model = PolicyRule
        fields = [
            "policy_rule_uri",
            "name",
            "version",
            "release_tag",
            "description",
            "tags",
            "metadata",
            "type",
            "class_name",
            "policy_settings",
            "policy_parameters",
            "policy_input_schema",
            "policy_output_schema",
            "policy_settings_schema",
            "policy_parameters_schema",
            "management_commands_schema",
            "sha256",
            "code_size",
            "code_format",
            "code_url",
            "archive_url",
            "builtin",
            "owner",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_archive_url(self, rule: PolicyRule) -> str:
        """Where the runtime's HTTP resolver downloads the archive (relative to the API)."""
        return f"/api/v1/policies/{rule.policy_rule_uri}/archive/"


_RULE_INPUT_JSON = (
    "metadata",
    "policy_settings",
    "policy_parameters",
    "policy_input_schema",
    "policy_output_schema",
    "policy_settings_schema",
    "policy_parameters_schema",
    "management_commands_schema",
    "tags",
)


class PolicyRuleWriteSerializer(serializers.Serializer):
    """Create (multipart with the archive in ``code``, or JSON with ``code_url``) and update."""

    name = serializers.CharField(max_length=200)
    version = serializers.CharField(max_length=64)
    release_tag = serializers.CharField(max_length=64)
    code = serializers.FileField(
        required=False, help_text="The archive (.zip, .tar.gz, .tar.xz) holding code/function.py."
    )
    code_url = serializers.URLField(
        required=False, max_length=1000, help_text="Fetched once at create instead of `code`."
    )
    description = serializers.CharField(required=False, allow_blank=True)
    type = serializers.CharField(required=False)
    class_name = serializers.CharField(required=False, allow_blank=True)
    builtin = serializers.BooleanField(required=False)
    metadata = LenientJSONField(required=False)
    policy_settings = LenientJSONField(required=False)
    policy_parameters = LenientJSONField(required=False)
    policy_input_schema = LenientJSONField(required=False)
    policy_output_schema = LenientJSONField(required=False)
    policy_settings_schema = LenientJSONField(required=False)
    policy_parameters_schema = LenientJSONField(required=False)
    management_commands_schema = LenientJSONField(required=False)
    tags = LenientJSONField(required=False, help_text="List of strings or 'a,b,c'.")


class ExecuteRequestSerializer(serializers.Serializer):
    input_data = serializers.JSONField(help_text="Passed to eval() as input_data.")
    parameters = serializers.DictField(required=False, allow_null=True)
    settings = serializers.DictField(required=False, allow_null=True)
    mode = serializers.ChoiceField(
        choices=[m.value for m in API_EXECUTION_MODES],
        default="sandbox",
        help_text="sandbox (default) or local (staff only: runs unsandboxed).",
    )


class MgmtRequestSerializer(serializers.Serializer):
    action = serializers.CharField(help_text="Passed to management() as action.")
    data = serializers.JSONField(required=False, allow_null=True)
    parameters = serializers.DictField(required=False, allow_null=True)
    settings = serializers.DictField(required=False, allow_null=True)
    mode = serializers.ChoiceField(
        choices=[m.value for m in API_EXECUTION_MODES], default="sandbox"
    )


class ResultSerializer(serializers.Serializer):
    result = serializers.JSONField()


class FailurePolicyRequestSerializer(serializers.Serializer):
    failure_policy_id = serializers.CharField(help_text="The failure policy's policy_rule_uri.")
    inputs = serializers.JSONField()
    parameters = serializers.DictField(required=True, allow_null=False, allow_empty=True)


class FailurePolicyResponseSerializer(serializers.Serializer):
    run_id = serializers.UUIDField()
    data = serializers.JSONField()


class FailurePolicyRunSerializer(serializers.ModelSerializer):
    class Meta:
        model = FailurePolicyRun
        fields = [
            "run_id",
            "failure_policy_id",
            "inputs",
            "parameters",
            "status",
            "result",
            "error",
            "duration_ms",
            "created_at",
        ]
        read_only_fields = fields


class CodePreviewSerializer(serializers.Serializer):
    format = serializers.CharField(required=False)
    sha256 = serializers.CharField(required=False)
    files = serializers.ListField(child=serializers.DictField())
    function_py = serializers.CharField()


# -- executors ------------------------------------------------------------------------------------


class PolicyExecutorSerializer(serializers.ModelSerializer):
    owner = OwnerField()

    class Meta:
        model = PolicyExecutor
        fields = [
            "executor_id",
            "executor_host_uri",
            "executor_metadata",
            "executor_hardware_info",
            "executor_status",
            "last_checked_at",
            "last_error",
            "owner",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["last_checked_at", "last_error", "owner", "created_at", "updated_at"]


class PolicyExecutorWriteSerializer(serializers.Serializer):
    executor_id = serializers.CharField(max_length=63)
    executor_host_uri = serializers.CharField(max_length=500, help_text="http(s)://host:port")
    executor_metadata = serializers.DictField(required=False)
    executor_hardware_info = serializers.DictField(required=False)
    executor_status = serializers.ChoiceField(choices=ExecutorStatus.choices, required=False)


class ExecutorExecuteRequestSerializer(serializers.Serializer):
    policy_rule_uri = serializers.CharField()
    input_data = serializers.JSONField()
    parameters = serializers.DictField(required=False, allow_null=True)
    settings = serializers.DictField(required=False, allow_null=True)
    timeout = serializers.FloatField(required=False, min_value=0.1, max_value=600)


# -- jobs ----------------------------------------------------------------------------------------


class PolicyJobSerializer(serializers.ModelSerializer):
    owner = OwnerField()
    executor_id = serializers.SerializerMethodField()
    task_id = serializers.UUIDField(source="task.task_id", read_only=True, allow_null=True)
    status_url = serializers.SerializerMethodField()

    class Meta:
        model = PolicyJob
        fields = [
            "job_id",
            "name",
            "policy_rule_uri",
            "policy_rule_parameters",
            "inputs",
            "executor_id",
            "node_selector",
            "cluster_id",
            "workload_id",
            "status",
            "result",
            "error",
            "task_id",
            "status_url",
            "owner",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields

    def get_executor_id(self, job: PolicyJob) -> str | None:
        return job.executor.executor_id if job.executor_id else job.executor_id_requested or None

    def get_status_url(self, job: PolicyJob) -> str | None:
        return f"/api/v1/tasks/{job.task_id}/" if job.task_id else None


class PolicyJobCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    policy_rule_uri = serializers.CharField(max_length=400)
    policy_rule_parameters = serializers.DictField(required=False, allow_null=True)
    inputs = serializers.JSONField(required=False, allow_null=True)
    executor_id = serializers.CharField(required=False, allow_blank=True, allow_null=True)
    node_selector = serializers.DictField(
        required=False,
        allow_null=True,
        help_text='With cluster_id, {"node_id": ...} pins the job to a node of that cluster.',
    )
    cluster_id = serializers.CharField(
        required=False,
        allow_blank=True,
        allow_null=True,
        max_length=63,
        help_text="Run the job on this cluster (a job workload of its driver: a process of a "
        "node agent, or a Kubernetes Job) instead of in a Celery worker. Staff or the "
        "cluster's owner only.",
    )


# -- functions -----------------------------------------------------------------------------------


class AutoscalingSerializer(serializers.Serializer):
    enabled = serializers.BooleanField(required=False)
    min_replicas = serializers.IntegerField(required=False)
    max_replicas = serializers.IntegerField(required=False)
    target_cpu_utilization_percentage = serializers.IntegerField(required=False)


class PolicyFunctionSerializer(serializers.ModelSerializer):
    owner = OwnerField()
    executor_id = serializers.CharField(source="executor.executor_id", default=None, read_only=True)
    call_url = serializers.SerializerMethodField()

    class Meta:
        model = PolicyFunction
        fields = [
            "function_id",
            "name",
            "policy_rule_uri",
            "policy_rule_parameters",
            "policy_rule_settings",
            "policy_sha256",
            "replicas",
            "autoscaling",
            "executor_id",
            "function_metadata",
            "function_tags",
            "runner",
            "status",
            "replica_state",
            "last_error",
            "call_url",
            "owner",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_call_url(self, function: PolicyFunction) -> str:
        return f"/api/v1/policy-functions/{function.name}/call/"


class PolicyFunctionCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=63)
    policy_rule_uri = serializers.CharField(max_length=400)
    policy_rule_parameters = serializers.DictField(required=False, allow_null=True)
    policy_rule_settings = serializers.DictField(required=False, allow_null=True)
    replicas = serializers.IntegerField(required=False, default=1)
    autoscaling = AutoscalingSerializer(required=False, allow_null=True)
    executor_id = serializers.CharField(required=False, allow_blank=True, allow_null=True)
    function_metadata = serializers.DictField(required=False, allow_null=True)
    function_tags = serializers.ListField(
        child=serializers.CharField(), required=False, allow_null=True
    )


class FunctionCallResponseSerializer(serializers.Serializer):
    result = serializers.JSONField()
    replica = serializers.IntegerField()


class FunctionMgmtResponseSerializer(serializers.Serializer):
    results = serializers.ListField(child=serializers.DictField())


# -- graphs --------------------------------------------------------------------------------------


class PolicyGraphSerializer(serializers.ModelSerializer):
    owner = OwnerField()

    class Meta:
        model = PolicyGraph
        fields = [
            "graph_uri",
            "name",
            "version",
            "release_tag",
            "description",
            "metadata",
            "search_tags",
            "graph_function_ids",
            "graph_connection_data",
            "input_schema",
            "output_schema",
            "owner",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class PolicyGraphWriteSerializer(serializers.Serializer):
    """Create/update. AIOS's ``graph_name``-style names are accepted as aliases."""

    ALIASES = {
        "graph_name": "name",
        "graph_version": "version",
        "graph_release_tag": "release_tag",
        "graph_metadata": "metadata",
        "graph_search_tags": "search_tags",
        "graph_description": "description",
        "graph_input_schema": "input_schema",
        "graph_output_schema": "output_schema",
    }

    name = serializers.CharField(max_length=200)
    version = serializers.CharField(max_length=64)
    release_tag = serializers.CharField(max_length=64)
    description = serializers.CharField(required=False, allow_blank=True, allow_null=True)
    metadata = LenientJSONField(required=False)
    search_tags = LenientJSONField(required=False)
    graph_function_ids = serializers.ListField(child=serializers.CharField(), required=False)
    graph_connection_data = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()), required=False
    )
    input_schema = serializers.DictField(required=False, allow_null=True)
    output_schema = serializers.DictField(required=False, allow_null=True)

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            data = {self.ALIASES.get(k, k): v for k, v in data.items()}
            metadata = data.get("metadata")
            if isinstance(metadata, str):  # AIOS's graph_metadata is a string
                data["metadata"] = {"text": metadata}
        return super().to_internal_value(data)


class GraphExecuteRequestSerializer(serializers.Serializer):
    input_data = serializers.JSONField()


class GraphExecuteResponseSerializer(serializers.Serializer):
    result = serializers.DictField(help_text="{sink function: its output}")
    order = serializers.ListField(child=serializers.CharField())
