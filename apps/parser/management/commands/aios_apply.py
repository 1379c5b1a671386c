"""``manage.py aios_apply <spec.json|yaml>``: submit a spec file through the parser service.

Runs in-process as the given user (``--user`` or ``--token``; the first superuser by
default), prints the answer as JSON, and for long actions (a 202 body with ``task_id``)
follows the task record with a progress bar until it finishes or ``--timeout`` passes.

Exit codes: 0 success; 1 the action or its task failed; 2 bad input (file, user, action);
3 the task did not finish before the timeout.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser
from rest_framework.authtoken.models import Token

from apps.core.errors import ApiError
from apps.parser import actions, services
from apps.tasks.choices import TaskStatus
from apps.tasks.models import Task

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_TIMEOUT = 0, 1, 2, 3
BAR_WIDTH = 30


def guess_action(envelope: dict) -> str | None:
    """The action a spec is for, from the shape of its values (``--action`` overrides)."""
    body = envelope.get("body") if isinstance(envelope.get("body"), dict) else {}
    spec = body.get("spec") if isinstance(body.get("spec"), dict) else {}
    values = spec.get("values") if isinstance(spec.get("values"), dict) else body.get("values")
    if not isinstance(values, dict):
        return None
    if "matchType" in values:
        return "search" if "rankingPolicyRule" in values else "filter"
    checks = (
        ("componentId", "createComponent"),
        ("blockComponentURI", "createBlock"),
        ("vdagName", "createvDAG"),
        ("mgmtCommand", "executeMgmtCommand"),
        ("regionId", "createCluster"),
        ("clusterId", "addNode"),
    )
    return next((action for key, action in checks if key in values), None)


def progress_bar(percent: int, message: str) -> str:
    percent = max(0, min(100, int(percent)))
    filled = BAR_WIDTH * percent // 100
    return f"[{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {percent:3d}% {message}"[:200]


class Command(BaseCommand):
    help = "Submit a spec file (JSON or YAML) through the parser, as a user; follow long tasks."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("spec", nargs="?", help="path of the spec file (JSON or YAML)")
        parser.add_argument(
            "--action",
            help="parser action (createComponent, createBlock, …); guessed from the spec "
            "(or its top-level 'action' key) when omitted",
        )
        parser.add_argument("--spec-uri", help="run a spec from the spec store instead of a file")
        who = parser.add_mutually_exclusive_group()
        who.add_argument("--user", help="username to act as (default: the first superuser)")
        who.add_argument("--token", help="API token of the user to act as")
        parser.add_argument(
            "--timeout", type=float, default=600.0, help="seconds to follow a task (default 600)"
        )
        parser.add_argument(
            "--poll", type=float, default=0.5, help="seconds between task polls (default 0.5)"
        )
        parser.add_argument("--no-follow", action="store_true", help="do not follow a task")

    def handle(self, *args: Any, **options: Any) -> None:
        code = self.run(options)
        if code:
            sys.exit(code)

    # -- steps ------------------------------------------------------------------------------

    def fail_usage(self, message: str) -> int:
        self.stderr.write(self.style.ERROR(message))
        return EXIT_USAGE

    def run(self, options: dict) -> int:
        user = self.resolve_user(options)
        if user is None:
            return EXIT_USAGE
        try:
            if options.get("spec_uri"):
                if not options.get("action"):
                    return self.fail_usage("--spec-uri needs --action")
                outcome = services.execute_with_spec(
                    options["action"], options["spec_uri"], user=user
                )
            else:
                loaded = self.load(options.get("spec"))
                if loaded is None:
                    return EXIT_USAGE
                action = options.get("action") or loaded.pop("action", None) or guess_action(loaded)
                loaded.pop("action", None)
                if not action:
                    return self.fail_usage(
                        "cannot tell the action from the spec; give --action "
                        f"(one of {', '.join(actions.ACTIONS)})"
                    )
                outcome = services.execute(action, loaded, user=user)
        except ApiError as exc:  # unknown action names
            self.stderr.write(self.style.ERROR(f"{exc.status_code} {exc.message}"))
            return EXIT_USAGE
        self.stdout.write(f"{outcome.status} {outcome.task.action} (parser task {outcome.task.id})")
        self.stdout.write(json.dumps(outcome.body, indent=2, sort_keys=True, default=str))
        if not outcome.ok:
            return EXIT_FAILED
        task_id = outcome.body.get("task_id")
        if outcome.status == 202 and task_id and not options["no_follow"]:
            return self.follow(str(task_id), options["timeout"], options["poll"])
        return EXIT_OK

    def resolve_user(self, options: dict):
        users = get_user_model().objects
        if options.get("token"):
            token = Token.objects.select_related("user").filter(key=options["token"]).first()
            if token is None:
                self.fail_usage("unknown token")
                return None
            return token.user
        if options.get("user"):
            user = users.filter(username=options["user"]).first()
            if user is None:
                self.fail_usage(f"no user {options['user']!r}")
            return user
        user = users.filter(is_superuser=True, is_active=True).order_by("pk").first()
        if user is None:
            self.fail_usage("no superuser exists; create one or pass --user/--token")
        return user

    def load(self, path: str | None) -> dict | None:
        if not path:
            self.fail_usage("give a spec file (or --spec-uri with --action)")
            return None
        file = Path(path)
        try:
            text = file.read_text()
        except OSError as exc:
            self.fail_usage(f"cannot read {path}: {exc.strerror or exc}")
            return None
        try:
            is_json = file.suffix.lower() == ".json"
            data = json.loads(text) if is_json else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as exc:
            self.fail_usage(
                f"{path} is not valid {'JSON' if file.suffix == '.json' else 'YAML'}: {exc}"
            )
            return None
        if not isinstance(data, dict):
            self.fail_usage(f"{path} must hold an object (the spec envelope)")
            return None
        return data

    def follow(self, task_id: str, timeout: float, poll: float) -> int:
        deadline = time.monotonic() + max(0.0, timeout)
        last = None
        while True:
            task = Task.objects.filter(pk=task_id).first()
            if task is None:
                self.stderr.write(self.style.ERROR(f"task {task_id} not found"))
                return EXIT_FAILED
            line = progress_bar(task.progress, task.progress_message or task.task_status)
            if line != last:
                self.stdout.write(line)
                last = line
            if task.task_status == TaskStatus.COMPLETED:
                self.stdout.write(self.style.SUCCESS(f"task {task_id} completed"))
                self.stdout.write(json.dumps(task.task_status_data, indent=2, default=str))
                return EXIT_OK
            if task.task_status == TaskStatus.FAILED:
                self.stderr.write(self.style.ERROR(f"task {task_id} failed: {task.error}"))
                return EXIT_FAILED
            if time.monotonic() >= deadline:
                self.stderr.write(
                    self.style.ERROR(
                        f"task {task_id} still {task.task_status} after {timeout:g}s; "
                        f"follow it at /api/v1/tasks/{task_id}/"
                    )
                )
                return EXIT_TIMEOUT
            time.sleep(max(0.05, poll))
