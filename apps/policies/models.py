"""Records of the policies system: rules, executors, jobs, functions, graphs, failure runs."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from apps.core.models import OwnedModel, TimeStampedModel
from apps.policies.choices import (
    DEFAULT_CLASS_NAME,
    ExecutorStatus,
    FunctionStatus,
    JobStatus,
    PolicyType,
    RunStatus,
)

ARCHIVE_DIR = "policies/archives"


def archive_upload_to(instance: PolicyRule, filename: str) -> str:
    """Archives are content addressed: ``policies/archives/<sha[:2]>/<sha256>.<format>``."""
    suffix = {"zip": "zip", "tar.gz": "tar.gz", "tar.xz": "tar.xz"}.get(instance.code_format, "bin")
    sha = instance.code_sha256
    return f"{ARCHIVE_DIR}/{sha[:2]}/{sha}.{suffix}"


class PolicyRule(OwnedModel):
    """A versioned policy: Python code in an archive plus its defaults and schemas."""

    policy_rule_uri = models.CharField(
        max_length=400, unique=True, editable=False, help_text="name:version-release_tag"
    )
    name = models.CharField(max_length=200, db_index=True)
    version = models.CharField(max_length=64)
    release_tag = models.CharField(max_length=64)
    description = models.TextField(blank=True, default="")
    tags = models.JSONField(default=list, blank=True, help_text="A list of strings.")
    metadata = models.JSONField(default=dict, blank=True)
    type = models.CharField(
        max_length=32, choices=PolicyType.choices, default=PolicyType.PYTHON_CLASS_V1
    )
    class_name = models.CharField(
        max_length=200,
        default=DEFAULT_CLASS_NAME,
        help_text="The class in code/function.py to instantiate.",
    )
    policy_settings = models.JSONField(default=dict, blank=True)
    policy_parameters = models.JSONField(default=dict, blank=True)
    policy_input_schema = models.JSONField(default=dict, blank=True)
    policy_output_schema = models.JSONField(default=dict, blank=True)
    policy_settings_schema = models.JSONField(default=dict, blank=True)
    policy_parameters_schema = models.JSONField(default=dict, blank=True)
    management_commands_schema = models.JSONField(
        default=list, blank=True, help_text="A list of {name, description, schema}."
    )
    code = models.FileField(upload_to=archive_upload_to, max_length=300)
    code_sha256 = models.CharField(max_length=64, db_index=True, editable=False)
    code_size = models.PositiveBigIntegerField(default=0, editable=False)
    code_format = models.CharField(max_length=16, editable=False, default="")
    code_url = models.URLField(
        max_length=1000, blank=True, default="", help_text="Where the archive was fetched from."
    )
    builtin = models.BooleanField(
        default=False, db_index=True, help_text="Seeded from block_sdk/builtin_policies."
    )

    class Meta:
        ordering = ["name", "version", "release_tag"]
        constraints = [
            models.UniqueConstraint(
                fields=["name", "version", "release_tag"], name="policies_rule_name_version_tag"
            )
        ]

    def __str__(self) -> str:
        return self.policy_rule_uri


class PolicyExecutor(OwnedModel):
    """A registered policy executor service (Type 2): an HTTP endpoint that runs policies."""

    executor_id = models.CharField(max_length=63, unique=True)
    executor_host_uri = models.CharField(max_length=500, help_text="http(s)://host:port")
    executor_metadata = models.JSONField(default=dict, blank=True)
    executor_hardware_info = models.JSONField(default=dict, blank=True)
    executor_status = models.CharField(
        max_length=16,
        choices=ExecutorStatus.choices,
        default=ExecutorStatus.HEALTHY,
        db_index=True,
    )
    last_checked_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["executor_id"]

    def __str__(self) -> str:
        return self.executor_id


class PolicyJob(OwnedModel):
    """A one-off run of a policy (Type 3), carried out by a Celery task (in the worker, or
    as a job workload on ``cluster_id``)."""

    job_id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    policy = models.ForeignKey(
        PolicyRule, null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs"
    )
    policy_rule_uri = models.CharField(max_length=400, db_index=True)
    policy_rule_parameters = models.JSONField(default=dict, blank=True)
    inputs = models.JSONField(default=dict, blank=True)
    executor = models.ForeignKey(
        PolicyExecutor, null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs"
    )
    executor_id_requested = models.CharField(max_length=63, blank=True, default="")
    node_selector = models.JSONField(default=dict, blank=True)
    # With a cluster the job runs there, as a ``job`` workload of the cluster's driver
    # (``block_sdk.policy_runtime.job_runner``), instead of in the Celery worker.
    cluster_id = models.CharField(
        max_length=63, blank=True, default="", db_index=True, help_text="Run on this cluster."
    )
    workload_id = models.CharField(
        max_length=128, blank=True, default="", help_text="The cluster workload that ran it."
    )
    status = models.CharField(
        max_length=16, choices=JobStatus.choices, default=JobStatus.PENDING, db_index=True
    )
    result = models.JSONField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True, help_text="The error shape when it failed.")
    task = models.OneToOneField(
        "tasks.Task", null=True, blank=True, on_delete=models.SET_NULL, related_name="policy_job"
    )
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.status})"


class PolicyFunction(OwnedModel):
    """A long-lived, stateful policy process with replicas (Type 4)."""

    function_id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=63, unique=True)
    policy = models.ForeignKey(
        PolicyRule, null=True, blank=True, on_delete=models.SET_NULL, related_name="functions"
    )
    policy_rule_uri = models.CharField(max_length=400, db_index=True)
    policy_rule_parameters = models.JSONField(default=dict, blank=True)
    policy_rule_settings = models.JSONField(default=dict, blank=True)
    policy_sha256 = models.CharField(max_length=64, blank=True, default="")
    replicas = models.PositiveSmallIntegerField(default=1)
    autoscaling = models.JSONField(
        default=dict,
        blank=True,
        help_text="{enabled, min_replicas, max_replicas, target_cpu_utilization_percentage}",
    )
    executor = models.ForeignKey(
        PolicyExecutor, null=True, blank=True, on_delete=models.SET_NULL, related_name="functions"
    )
    function_metadata = models.JSONField(default=dict, blank=True)
    function_tags = models.JSONField(default=list, blank=True)
    runner = models.CharField(max_length=32, default="local")
    status = models.CharField(
        max_length=16, choices=FunctionStatus.choices, default=FunctionStatus.STARTING
    )
    replica_state = models.JSONField(
        default=list, blank=True, help_text="Per replica: index, pid, port, url, started_at."
    )
    last_error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class PolicyGraph(OwnedModel):
    """A DAG of policy functions (Type 5): outputs feed forward along ``graph_connection_data``."""

    graph_uri = models.CharField(max_length=400, unique=True, editable=False)
    name = models.CharField(max_length=200, db_index=True)
    version = models.CharField(max_length=64)
    release_tag = models.CharField(max_length=64)
    description = models.TextField(blank=True, default="")
    metadata = models.JSONField(default=dict, blank=True)
    search_tags = models.JSONField(default=list, blank=True)
    graph_function_ids = models.JSONField(default=list, help_text="Names of policy functions.")
    graph_connection_data = models.JSONField(
        default=dict, blank=True, help_text='Adjacency map: {"a": ["b", "c"], "b": ["d"]}.'
    )
    input_schema = models.JSONField(default=dict, blank=True)
    output_schema = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["name", "version", "release_tag"]

    def __str__(self) -> str:
        return self.graph_uri


class FailurePolicyRun(TimeStampedModel):
    """One call of the failure-policy endpoint, kept for operators."""

    run_id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    failure_policy_id = models.CharField(max_length=400, db_index=True)
    policy = models.ForeignKey(
        PolicyRule, null=True, blank=True, on_delete=models.SET_NULL, related_name="failure_runs"
    )
    inputs = models.JSONField(default=dict, blank=True)
    parameters = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=RunStatus.choices, db_index=True)
    result = models.JSONField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)
    duration_ms = models.FloatField(default=0)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.failure_policy_id} {self.status} at {self.created_at:%Y-%m-%d %H:%M:%S}"
