"""REST surface of the policies system. Views only translate HTTP to ``services`` calls."""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from apps.core.api.mixins import OwnedQuerysetMixin, QueryMixin
from apps.core.errors import Forbidden, ValidationFailed
from apps.core.permissions import IsOwnerOrStaffForWrites
from apps.core.query import QueryFields
from apps.policies import runtime, services
from apps.policies.api import serializers as s
from apps.policies.choices import ExecutionMode
from apps.policies.errors import PolicyExecutionError
from apps.policies.filtersets import (
    PolicyExecutorFilterSet,
    PolicyFunctionFilterSet,
    PolicyGraphFilterSet,
    PolicyJobFilterSet,
    PolicyRuleFilterSet,
)
from apps.policies.models import PolicyExecutor, PolicyFunction, PolicyGraph, PolicyJob, PolicyRule
from block_sdk.policy_runtime.errors import PolicyError

# URIs are ``name:version-tag``; the colon keeps them apart from list routes (``query/``).
URI_LOOKUP_REGEX = r"[A-Za-z0-9_.+\-]+:[A-Za-z0-9_.+\-]+"
ERROR_RESPONSES = {
    400: OpenApiResponse(description="Invalid input (the error shape)."),
    401: OpenApiResponse(description="Not authenticated."),
    404: OpenApiResponse(description="Unknown policy."),
    422: OpenApiResponse(
        description="The policy failed: error code timeout, memory, exception, bad_output, "
        "bad_input, load_error or integrity."
    ),
}


def _validated(serializer_class: type, data: Any, **kwargs: Any) -> dict[str, Any]:
    serializer = serializer_class(data=data, **kwargs)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def _mode_for(request: Request, mode: str) -> str:
    if mode == ExecutionMode.LOCAL and not request.user.is_staff:
        raise Forbidden(
            "mode 'local' runs the policy unsandboxed in the web process: staff only",
            details=[{"field": "mode"}],
        )
    return mode


class PolicyRuleViewSet(OwnedQuerysetMixin, QueryMixin, viewsets.ModelViewSet):
    """The policy registry: ``/api/v1/policies/<name:version-release_tag>/``."""

    queryset = PolicyRule.objects.select_related("owner")
    serializer_class = s.PolicyRuleSerializer
    filterset_class = PolicyRuleFilterSet
    permission_classes = [IsOwnerOrStaffForWrites]
    parser_classes = [JSONParser, MultiPartParser, FormParser]
    lookup_field = "policy_rule_uri"
    lookup_value_regex = URI_LOOKUP_REGEX
    query_fields = QueryFields.of(
        "policy_rule_uri",
        "name",
        "version",
        "release_tag",
        "type",
        "class_name",
        "description",
        "builtin",
        "created_at",
        "updated_at",
        sha256="code_sha256",
        owner="owner__username",
        json=("metadata", "tags", "policy_settings", "policy_parameters"),
    )

    def get_permissions(self):
        if self.action in {"execute", "mgmt", "execute_failure_policy"}:
            return [IsAuthenticated()]
        return super().get_permissions()

    def _write_fields(self, request: Request, *, partial: bool) -> dict[str, Any]:
        data = _validated(s.PolicyRuleWriteSerializer, request.data, partial=partial)
        upload = data.pop("code", None)
        code = request.data.get("code")
        if upload is None and isinstance(code, str) and code:
            data.setdefault("code_url", code)  # AIOS's `code` is the archive's URL
        if upload is not None:
            if upload.size > services.archive_limits().max_archive_bytes:
                raise ValidationFailed("the archive is larger than the upload limit")
            data["archive"] = upload.read()
        return data

    @extend_schema(
        request={
            "multipart/form-data": s.PolicyRuleWriteSerializer,
            "application/json": s.PolicyRuleWriteSerializer,
        },
        responses={201: s.PolicyRuleSerializer, **ERROR_RESPONSES},
    )
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        fields = self._write_fields(request, partial=False)
        archive = fields.pop("archive", None)
        code_url = fields.pop("code_url", None)
        if archive is not None:
            rule = services.register_policy(archive=archive, owner=request.user, **fields)
        elif code_url:
            rule = services.register_policy_from_url(
                code_url=code_url, owner=request.user, **fields
            )
        else:
            raise ValidationFailed(
                "send the archive as the multipart file field 'code', or a 'code_url'",
                details=[{"field": "code"}],
            )
        return Response(s.PolicyRuleSerializer(rule).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        request={
            "multipart/form-data": s.PolicyRuleWriteSerializer,
            "application/json": s.PolicyRuleWriteSerializer,
        },
        responses={200: s.PolicyRuleSerializer, **ERROR_RESPONSES},
    )
    def update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        rule = self.get_object()
        fields = self._write_fields(request, partial=kwargs.get("partial", False))
        rule = services.update_policy(rule, **fields)
        return Response(s.PolicyRuleSerializer(rule).data)

    def perform_destroy(self, instance: PolicyRule) -> None:
        services.delete_policy(instance)

    @extend_schema(
        request=s.ExecuteRequestSerializer,
        responses={200: s.ResultSerializer, 403: OpenApiResponse(), **ERROR_RESPONSES},
        examples=[OpenApiExample("sandboxed", value={"input_data": {"x": 1}})],
    )
    @action(detail=True, methods=["post"])
    def execute(self, request: Request, policy_rule_uri: str) -> Response:
        """Run ``eval()``: sandboxed by default, in-process (``local``) for staff."""
        body = _validated(s.ExecuteRequestSerializer, request.data)
        result = services.evaluate_policy(
            policy_rule_uri,
            body["input_data"],
            parameters=body.get("parameters"),
            settings=body.get("settings"),
            mode=_mode_for(request, body["mode"]),
        )
        return Response({"result": result})

    @extend_schema(
        request=s.MgmtRequestSerializer,
        responses={200: s.ResultSerializer, 403: OpenApiResponse(), **ERROR_RESPONSES},
    )
    @action(detail=True, methods=["post"])
    def mgmt(self, request: Request, policy_rule_uri: str) -> Response:
        """Run ``management(action, data)``."""
        body = _validated(s.MgmtRequestSerializer, request.data)
        result = services.run_management(
            policy_rule_uri,
            body["action"],
            body.get("data"),
            parameters=body.get("parameters"),
            settings=body.get("settings"),
            mode=_mode_for(request, body["mode"]),
        )
        return Response({"result": result})

    @extend_schema(
        responses={(200, "application/octet-stream"): OpenApiTypes.BINARY, 422: OpenApiResponse()}
    )
    @action(detail=True, methods=["get"])
    def archive(self, request: Request, policy_rule_uri: str) -> HttpResponse:
        """The stored archive (verified against its sha256 before it is sent)."""
        rule = self.get_object()
        try:
            data = runtime.read_archive(rule)
        except PolicyError as exc:
            raise PolicyExecutionError.from_runtime(exc, uri=policy_rule_uri) from None
        suffix = rule.code_format or "bin"
        response = HttpResponse(data, content_type="application/octet-stream")
        response["Content-Disposition"] = (
            f'attachment; filename="{rule.name}-{rule.version}-{rule.release_tag}.{suffix}"'
        )
        response["X-AIOS-SHA256"] = rule.code_sha256
        return response

    @extend_schema(responses=s.CodePreviewSerializer)
    @action(detail=True, methods=["get"], url_path="code-preview")
    def code_preview(self, request: Request, policy_rule_uri: str) -> Response:
        """Files of the archive and the text of ``code/function.py``."""
        return Response(services.archive_listing(self.get_object()))

    @extend_schema(
        request=s.FailurePolicyRequestSerializer,
        responses={200: s.FailurePolicyResponseSerializer, **ERROR_RESPONSES},
    )
    @action(detail=False, methods=["post"], url_path="execute-failure-policy")
    def execute_failure_policy(self, request: Request) -> Response:
        """Run a failure policy sandboxed and log the run (admin: Failure policy runs)."""
        body = _validated(s.FailurePolicyRequestSerializer, request.data)
        run = services.execute_failure_policy(
            body["failure_policy_id"], body["inputs"], body["parameters"], user=request.user
        )
        return Response({"run_id": str(run.run_id), "data": run.result})


class PolicyExecutorViewSet(OwnedQuerysetMixin, QueryMixin, viewsets.ModelViewSet):
    """Registered policy executor services (T2)."""

    queryset = PolicyExecutor.objects.select_related("owner")
    serializer_class = s.PolicyExecutorSerializer
    filterset_class = PolicyExecutorFilterSet
    permission_classes = [IsOwnerOrStaffForWrites]
    lookup_field = "executor_id"
    lookup_value_regex = r"[a-z0-9][-a-z0-9]*"
    query_fields = QueryFields.of(
        "executor_id",
        "executor_host_uri",
        "executor_status",
        "created_at",
        json=("executor_metadata", "executor_hardware_info"),
    )

    def get_permissions(self):
        if self.action == "execute":
            return [IsAuthenticated()]
        return super().get_permissions()

    @extend_schema(
        request=s.PolicyExecutorWriteSerializer,
        responses={201: s.PolicyExecutorSerializer, 409: OpenApiResponse(), **ERROR_RESPONSES},
    )
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        body = _validated(s.PolicyExecutorWriteSerializer, request.data)
        executor = services.register_executor(owner=request.user, **body)
        return Response(s.PolicyExecutorSerializer(executor).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        request=s.PolicyExecutorWriteSerializer,
        responses={200: s.PolicyExecutorSerializer, **ERROR_RESPONSES},
    )
    def update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        executor = self.get_object()
        body = _validated(
            s.PolicyExecutorWriteSerializer, request.data, partial=kwargs.get("partial", False)
        )
        executor = services.update_executor(executor, **body)
        return Response(s.PolicyExecutorSerializer(executor).data)

    @extend_schema(
        request=s.ExecutorExecuteRequestSerializer,
        responses={200: s.ResultSerializer, 503: OpenApiResponse(), **ERROR_RESPONSES},
    )
    @action(detail=True, methods=["post"])
    def execute(self, request: Request, executor_id: str) -> Response:
        """Run a policy on this executor (the archive is sent once per sha256)."""
        body = _validated(s.ExecutorExecuteRequestSerializer, request.data)
        result = services.execute_on_executor(
            executor_id,
            body["policy_rule_uri"],
            body["input_data"],
            parameters=body.get("parameters"),
            settings=body.get("settings"),
            timeout=body.get("timeout"),
        )
        return Response({"result": result})

    @extend_schema(request=None, responses=s.PolicyExecutorSerializer)
    @action(detail=True, methods=["post"], url_path="health-check")
    def health_check(self, request: Request, executor_id: str) -> Response:
        """Probe the executor's ``/health`` and record its status."""
        executor = services.check_executor(self.get_object())
        return Response(s.PolicyExecutorSerializer(executor).data)


class PolicyJobViewSet(
    OwnedQuerysetMixin,
    QueryMixin,
    mixins.CreateModelMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """One-off policy runs (T3), carried out by Celery (or, with ``cluster_id``, as a job
    workload on that cluster); status also in ``/api/v1/tasks/``."""

    queryset = PolicyJob.objects.select_related("owner", "executor", "task")
    serializer_class = s.PolicyJobSerializer
    filterset_class = PolicyJobFilterSet
    permission_classes = [IsOwnerOrStaffForWrites]
    lookup_field = "job_id"
    query_fields = QueryFields.of(
        "job_id",
        "name",
        "policy_rule_uri",
        "status",
        "created_at",
        "finished_at",
        json=("inputs", "result", "policy_rule_parameters"),
    )

    @extend_schema(
        request=s.PolicyJobCreateSerializer,
        responses={202: s.PolicyJobSerializer, **ERROR_RESPONSES},
    )
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        body = _validated(s.PolicyJobCreateSerializer, request.data)
        job = services.submit_job(
            name=body["name"],
            policy_rule_uri=body["policy_rule_uri"],
            policy_rule_parameters=body.get("policy_rule_parameters"),
            inputs=body.get("inputs"),
            executor_id=body.get("executor_id") or None,
            node_selector=body.get("node_selector"),
            cluster_id=body.get("cluster_id") or None,
            owner=request.user,
        )
        return Response(s.PolicyJobSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class PolicyFunctionViewSet(
    OwnedQuerysetMixin,
    QueryMixin,
    mixins.CreateModelMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Long-lived stateful policy processes with replicas (T4)."""

    queryset = PolicyFunction.objects.select_related("owner", "executor")
    serializer_class = s.PolicyFunctionSerializer
    filterset_class = PolicyFunctionFilterSet
    permission_classes = [IsOwnerOrStaffForWrites]
    lookup_field = "name"
    lookup_value_regex = r"[a-z0-9][-a-z0-9]*"
    query_fields = QueryFields.of(
        "name",
        "policy_rule_uri",
        "status",
        "replicas",
        "created_at",
        json=("function_metadata", "function_tags"),
    )

    def get_permissions(self):
        if self.action == "call":
            return [IsAuthenticated()]
        return super().get_permissions()

    @extend_schema(
        request=s.PolicyFunctionCreateSerializer,
        responses={201: s.PolicyFunctionSerializer, **ERROR_RESPONSES},
    )
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        body = _validated(s.PolicyFunctionCreateSerializer, request.data)
        function = services.create_function(
            name=body["name"],
            policy_rule_uri=body["policy_rule_uri"],
            policy_rule_parameters=body.get("policy_rule_parameters"),
            policy_rule_settings=body.get("policy_rule_settings"),
            replicas=body.get("replicas", 1),
            autoscaling=body.get("autoscaling"),
            executor_id=body.get("executor_id") or None,
            function_metadata=body.get("function_metadata"),
            function_tags=body.get("function_tags"),
            owner=request.user,
        )
        return Response(s.PolicyFunctionSerializer(function).data, status=status.HTTP_201_CREATED)

    def perform_destroy(self, instance: PolicyFunction) -> None:
        services.delete_function(instance)

    @extend_schema(
        request={"application/json": OpenApiTypes.ANY},
        responses={
            200: s.FunctionCallResponseSerializer,
            503: OpenApiResponse(),
            **ERROR_RESPONSES,
        },
    )
    @action(detail=True, methods=["post"])
    def call(self, request: Request, name: str) -> Response:
        """The body is the input; the next replica (round robin) answers."""
        return Response(services.call_function(name, request.data))

    @extend_schema(request=s.MgmtRequestSerializer, responses=s.FunctionMgmtResponseSerializer)
    @action(detail=True, methods=["post"])
    def mgmt(self, request: Request, name: str) -> Response:
        """``management(action, data)`` on every replica."""
        self.get_object()  # owner or staff only
        body = request.data if isinstance(request.data, dict) else {}
        action_name = body.get("action", body.get("mgmt_action"))
        data = body.get("data", body.get("mgmt_data"))
        return Response(services.function_management(name, action_name, data))

    @extend_schema(request=None, responses=s.PolicyFunctionSerializer)
    @action(detail=True, methods=["post"])
    def reconcile(self, request: Request, name: str) -> Response:
        """Restart replicas whose process died."""
        function = services.reconcile_function(self.get_object())
        return Response(s.PolicyFunctionSerializer(function).data)


class PolicyGraphViewSet(OwnedQuerysetMixin, QueryMixin, viewsets.ModelViewSet):
    """DAGs of policy functions (T5)."""

    queryset = PolicyGraph.objects.select_related("owner")
    serializer_class = s.PolicyGraphSerializer
    filterset_class = PolicyGraphFilterSet
    permission_classes = [IsOwnerOrStaffForWrites]
    lookup_field = "graph_uri"
    lookup_value_regex = URI_LOOKUP_REGEX
    query_fields = QueryFields.of(
        "graph_uri",
        "name",
        "version",
        "release_tag",
        "description",
        "created_at",
        json=("metadata", "search_tags", "graph_function_ids"),
    )

    def get_permissions(self):
        if self.action == "execute":
            return [IsAuthenticated()]
        return super().get_permissions()

    @extend_schema(
        request=s.PolicyGraphWriteSerializer,
        responses={201: s.PolicyGraphSerializer, **ERROR_RESPONSES},
    )
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        body = _validated(s.PolicyGraphWriteSerializer, request.data)
        graph = services.create_graph(owner=request.user, **body)
        return Response(s.PolicyGraphSerializer(graph).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        request=s.PolicyGraphWriteSerializer,
        responses={200: s.PolicyGraphSerializer, **ERROR_RESPONSES},
    )
    def update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        graph = self.get_object()
        body = _validated(
            s.PolicyGraphWriteSerializer, request.data, partial=kwargs.get("partial", False)
        )
        graph = services.update_graph(graph, **body)
        return Response(s.PolicyGraphSerializer(graph).data)

    @extend_schema(
        request=s.GraphExecuteRequestSerializer,
        responses={200: s.GraphExecuteResponseSerializer, **ERROR_RESPONSES},
    )
    @action(detail=True, methods=["post"])
    def execute(self, request: Request, graph_uri: str) -> Response:
        """Run the graph's functions in topological order; answers the sinks' outputs."""
        body = _validated(s.GraphExecuteRequestSerializer, request.data)
        return Response(services.execute_graph(graph_uri, body["input_data"]))
