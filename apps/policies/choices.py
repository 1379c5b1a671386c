"""Named values of the policies system (types, execution modes, statuses, error codes)."""

from django.db import models


class PolicyType(models.TextChoices):
    PYTHON_CLASS_V1 = "python_class_v1", "Python class (AIOSv1PolicyRule)"


class ExecutionMode(models.TextChoices):
    """Where ``evaluate_policy`` runs the code."""

    SANDBOX = "sandbox", "sandboxed worker (default for control-plane hooks)"
    LOCAL = "local", "in-process (trusted built-ins only)"
    REMOTE = "remote", "on a registered policy executor"


# Modes a caller of the REST ``execute/`` action may ask for (remote goes through executors).
API_EXECUTION_MODES = (ExecutionMode.SANDBOX, ExecutionMode.LOCAL)


class ExecutorStatus(models.TextChoices):
    HEALTHY = "healthy"
    UNREACHABLE = "unreachable"
    BUSY = "busy"


class JobStatus(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


class FunctionStatus(models.TextChoices):
    STARTING = "starting"
    RUNNING = "running"
    DEGRADED = "degraded"  # some replicas are down
    FAILED = "failed"  # no replica could start
    STOPPED = "stopped"


class RunStatus(models.TextChoices):
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class PolicyErrorCode(models.TextChoices):
    """``code`` of a failed execution (the runtime's codes; 422 unless noted)."""

    TIMEOUT = "timeout"
    MEMORY = "memory"
    EXCEPTION = "exception"
    BAD_OUTPUT = "bad_output"
    BAD_INPUT = "bad_input"
    LOAD_ERROR = "load_error"
    INTEGRITY = "integrity"
    BUSY = "busy"  # 503: the sandbox queue is full
    UNAVAILABLE = "unavailable"  # 503: an executor or function replica cannot be reached


POLICY_JOB_TASK_TYPE = "policy_job"
DEFAULT_CLASS_NAME = "AIOSv1PolicyRule"
