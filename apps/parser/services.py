"""The parser service: validate a spec, convert custom-template specs, dispatch to the
action's handler, and log the call as a :class:`ParserTask`.

Called by the ``/api/<action>`` views, ``/api/with-spec/<action>``, the parser-task
re-execute endpoint and ``manage.py aios_apply`` alike, so all behave the same.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from apps.core.actions import ActionRequest, ActionResult
from apps.core.errors import ApiError, Unprocessable, ValidationFailed, error_body
from apps.parser import actions, validation
from apps.parser.choices import ParserTaskStatus
from apps.parser.models import ParserTask

log = logging.getLogger("aios.parser")

MAX_LOGGED_BODY = 256 * 1024  # characters of JSON kept in the log per response


@dataclass
class Outcome:
    """What a parser call answered, and its log record."""

    status: int
    body: dict[str, Any]
    task: ParserTask

    @property
    def ok(self) -> bool:
        return self.status < 400


def _user_or_none(user):
    return user if user is not None and getattr(user, "is_authenticated", False) else None


def _without_nul(value: Any) -> Any:
    # PostgreSQL jsonb cannot hold NUL characters; the log keeps a visible stand-in.
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_without_nul(str(k)): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    return value


def _loggable(body: Any) -> Any:
    try:
        text = json.dumps(_without_nul(body), default=str)
    except (TypeError, ValueError):
        return {"unserializable": repr(body)[:1000]}
    if len(text) <= MAX_LOGGED_BODY:
        return json.loads(text)
    return {"truncated": True, "size": len(text), "preview": text[:4096]}


def _template_header(envelope: Any) -> str:
    if isinstance(envelope, dict):
        header = envelope.get("header", envelope.get("head"))
        if isinstance(header, dict) and isinstance(header.get("templateUri"), str):
            return _without_nul(header["templateUri"])[:300]
    return ""


def internal_values(action: str, output: Any, template_uri: str) -> Any:
    """The spec values in a template policy's answer: a full envelope, ``{"spec":
    {"values"}}``, ``{"values"}``, or the values themselves."""
    if not isinstance(output, dict):
        raise Unprocessable(
            f"template {template_uri!r} returned {type(output).__name__}; expected an object "
            "holding the spec in the internal form",
            code="template_output_invalid",
        )
    if "body" in output:
        header, body = validation.split_envelope(output, ["templateOutput"])
        if header.get("templateUri") != validation.BUILTIN_TEMPLATE:
            raise Unprocessable(
                f"template {template_uri!r} returned an envelope for template "
                f"{header.get('templateUri')!r}; a template's output must be Parser/V1",
                code="template_output_invalid",
            )
        return validation.values_of(action, body, ["templateOutput"])
    spec = output.get("spec")
    if set(output) == {"spec"} and isinstance(spec, dict) and "values" in spec:
        return spec["values"]
    if set(output) == {"values"}:
        return output["values"]
    return output


def prepare(action: str, envelope: Any, *, user=None) -> ActionRequest:
    """Validate (and, for a custom template, convert) a spec into an ActionRequest."""
    header, body = validation.split_envelope(envelope)
    template_uri = header["templateUri"]
    parameters = header.get("parameters") or {}
    if template_uri == validation.BUILTIN_TEMPLATE:
        values = validation.values_of(action, body)
        base = validation.values_path(action)
    else:
        from apps.registries import services as registries

        template = registries.get_template(template_uri)
        output = registries.execute_template(template, body, parameters)
        values = internal_values(action, output, template_uri)
        base = ["templateOutput"]
    values = validation.validate_values(action, values, base)
    return ActionRequest(
        action=action,
        values=values,
        header={"templateUri": template_uri, "parameters": parameters},
        user=user,
        raw=envelope if isinstance(envelope, dict) else {},
    )


def _run(action: str, envelope: Any, user) -> ActionResult:
    request = prepare(action, envelope, user=user)
    handler = actions.load_handler(action, request.values)
    # A handler's writes are all or nothing; the log record is written outside.
    with transaction.atomic():
        result = handler(request)
    if not isinstance(result, ActionResult) or not isinstance(result.body, dict):
        raise TypeError(
            f"handler of {action!r} returned {type(result).__name__}, not an ActionResult "
            "with a dict body"
        )
    return result


def execute(
    action_name: str,
    envelope: Any,
    *,
    user=None,
    spec_uri: str = "",
    re_executed_from: ParserTask | None = None,
) -> Outcome:
    """Run a parser action on a spec envelope as ``user`` and log it.

    Never raises for a bad spec or a failing handler: the answer (status + body in the
    one error shape) is returned and recorded. Unknown action names raise ``NotFound``
    before anything is logged.
    """
    return _logged(
        action_name,
        user=user,
        spec_uri=spec_uri,
        envelope=envelope,
        re_executed_from=re_executed_from,
    )


def execute_with_spec(
    action_name: str, spec_uri: Any, *, user=None, parameters: Any = None
) -> Outcome:
    """Run ``action_name`` on a spec from the spec store (``?specUri=``); ``parameters``
    are merged into the stored header's parameters."""
    return _logged(
        action_name,
        user=user,
        spec_uri=spec_uri if isinstance(spec_uri, str) else "",
        envelope=None,
        load=lambda action: stored_envelope(action, spec_uri, parameters),
    )


def stored_envelope(action: str, spec_uri: Any, parameters: Any = None) -> dict:
    from apps.registries import services as registries
    from apps.registries.choices import SPEC_TYPE_ACTIONS

    if not isinstance(spec_uri, str) or not spec_uri:
        raise ValidationFailed(
            "the specUri query parameter is required",
            details=[{"field": "specUri", "message": "required"}],
        )
    spec = registries.get_spec(spec_uri)
    if action not in SPEC_TYPE_ACTIONS.get(spec.spec_type, ()):
        raise ValidationFailed(
            f"spec {spec_uri!r} is a {spec.spec_type!r} spec; it cannot run {action!r}",
            details=[
                {
                    "field": "specUri",
                    "specType": spec.spec_type,
                    "actions": list(SPEC_TYPE_ACTIONS.get(spec.spec_type, ())),
                }
            ],
        )
    envelope = json.loads(json.dumps(registries.envelope_of(spec, action)))
    if parameters:
        if not isinstance(parameters, dict):
            raise ValidationFailed(
                "parameters must be an object", details=[{"field": "parameters"}]
            )
        header_key = "head" if "head" in envelope and "header" not in envelope else "header"
        header = envelope.setdefault(header_key, {})
        if isinstance(header, dict):
            header["parameters"] = {**(header.get("parameters") or {}), **parameters}
    return envelope


def _logged(
    action_name: str,
    *,
    user,
    spec_uri: str,
    envelope: Any,
    re_executed_from: ParserTask | None = None,
    load: Callable[[str], Any] | None = None,
) -> Outcome:
    action = actions.canonical_action(action_name)
    user = _user_or_none(user)
    started = time.monotonic()
    task = ParserTask.objects.create(
        owner=user,
        action=action,
        requested_action=action_name[:64],
        template_uri=_template_header(envelope),
        spec_uri=_without_nul(spec_uri)[:300],
        spec=_as_logged_spec(envelope),
        re_executed_from=re_executed_from,
    )
    extra: dict[str, Any] = {}
    try:
        if load is not None:
            envelope = load(action)
            extra = {"spec": _as_logged_spec(envelope), "template_uri": _template_header(envelope)}
        result = _run(action, envelope, user)
        status, body = result.status, result.body
    except ApiError as exc:
        status, body = exc.status_code, exc.as_dict()
    except Exception:
        log.exception("event=parser_action_crashed action=%s task=%s", action, task.id)
        status = 500
        body = error_body("internal_error", "internal server error; the error was logged")
    duration_ms = round((time.monotonic() - started) * 1000, 3)
    ParserTask.objects.filter(pk=task.pk).update(
        status=ParserTaskStatus.SUCCEEDED if status < 400 else ParserTaskStatus.FAILED,
        response_status=status,
        response_body=_loggable(body),
        duration_ms=duration_ms,
        finished_at=timezone.now(),
        updated_at=timezone.now(),
        **extra,
    )
    task.refresh_from_db()
    log.info(
        "event=parser_action action=%s status=%s duration_ms=%s task=%s user=%s spec_uri=%s",
        action,
        status,
        duration_ms,
        task.id,
        getattr(user, "username", None),
        spec_uri or "-",
    )
    return Outcome(status, body, task)


def _as_logged_spec(envelope: Any) -> Any:
    if envelope is None:
        return {}
    return _loggable(envelope) if isinstance(envelope, dict) else {"raw": _loggable(envelope)}


def re_execute(task: ParserTask, *, user) -> Outcome:
    """Run a logged call's spec again, as ``user``; the new task links to the old one."""
    return execute(
        task.requested_action or task.action,
        task.spec,
        user=user,
        spec_uri=task.spec_uri,
        re_executed_from=task,
    )


def prune_parser_tasks(*, older_than_days: float) -> int:
    """Delete log records older than ``older_than_days``; returns how many went. The log is
    an audit trail in PostgreSQL; operators bound it with this (``aios_prune_parser_tasks``)."""
    if older_than_days < 0:
        raise ValidationFailed("older_than_days must be >= 0")
    cutoff = timezone.now() - timedelta(days=older_than_days)
    deleted, _ = ParserTask.objects.filter(created_at__lt=cutoff).delete()
    log.info("event=parser_tasks_pruned deleted=%d older_than_days=%s", deleted, older_than_days)
    return deleted
