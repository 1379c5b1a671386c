"""``manage.py aios_policy_package <folder> --name N --version V --release-tag T [--register]``.

Packages a policy folder (``code/function.py`` and friends) as a reproducible ``.tar.gz`` with
the runtime's packager (which refuses links and leaves caches out), validates it, writes it
(``--output``, default ``<name>-<version>-<tag>.tar.gz``) and, with ``--register``, registers
it (or, with ``--update``, replaces the code of an existing record).
"""

from __future__ import annotations

import json
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from apps.core.errors import ApiError
from apps.policies import services
from block_sdk.policy_runtime.archive import package_folder, validate_archive
from block_sdk.policy_runtime.errors import PolicyError


class Command(BaseCommand):
    help = "Package a policy folder as a .tar.gz archive and optionally register it."

    def add_base_argument(self, parser, *args, **kwargs) -> None:
        # --version is the policy's version here, not Django's.
        if "--version" not in args:
            super().add_base_argument(parser, *args, **kwargs)

    def add_arguments(self, parser) -> None:
        parser.add_argument("folder", help="a folder holding code/function.py (or function.py)")
        parser.add_argument("--name", required=True)
        parser.add_argument("--version", required=True, dest="policy_version")
        parser.add_argument("--release-tag", required=True)
        parser.add_argument("--output", help="where to write the archive")
        parser.add_argument("--register", action="store_true", help="register it in the registry")
        parser.add_argument(
            "--update", action="store_true", help="replace an existing record's code"
        )
        parser.add_argument("--description", default=None)
        parser.add_argument("--tags", default=None, help="comma-separated")
        parser.add_argument("--default-parameters", default=None, help="policy_parameters (JSON)")
        parser.add_argument("--default-settings", default=None, help="policy_settings (JSON)")
        parser.add_argument("--class-name", default=None)
        parser.add_argument("--owner", default=None, help="username owning the record")

    def handle(self, *args, **options) -> None:
        folder = Path(options["folder"])
        if not folder.is_dir():
            raise CommandError(f"{folder} is not a folder")
        try:
            data = package_folder(folder)
            info = validate_archive(data)
        except PolicyError as exc:
            raise CommandError(f"cannot package {folder}: {exc.message}") from None
        name, version, tag = options["name"], options["policy_version"], options["release_tag"]
        output = Path(options["output"] or f"{name}-{version}-{tag}.tar.gz")
        output.write_bytes(data)
        self.stdout.write(
            f"packaged {folder} -> {output} ({info.size} bytes, {len(info.files)} files, "
            f"sha256={info.sha256})"
        )
        if not (options["register"] or options["update"]):
            return
        fields = self._fields(options)
        try:
            if options["update"]:
                rule = services.update_policy(
                    services.get_policy(f"{name}:{version}-{tag}"), archive=data, **fields
                )
                verb = "updated"
            else:
                rule = services.register_policy(
                    name=name,
                    version=version,
                    release_tag=tag,
                    archive=data,
                    owner=self._owner(options["owner"]),
                    **fields,
                )
                verb = "registered"
        except ApiError as exc:
            raise CommandError(f"{exc.code}: {exc.message}") from None
        self.stdout.write(self.style.SUCCESS(f"{verb} {rule.policy_rule_uri}"))

    @staticmethod
    def _fields(options: dict) -> dict:
        fields: dict = {}
        if options["description"] is not None:
            fields["description"] = options["description"]
        if options["tags"] is not None:
            fields["tags"] = options["tags"]
        if options["class_name"]:
            fields["class_name"] = options["class_name"]
        for option, field in (
            ("default_parameters", "policy_parameters"),
            ("default_settings", "policy_settings"),
        ):
            if options[option]:
                try:
                    fields[field] = json.loads(options[option])
                except ValueError as exc:
                    flag = option.replace("_", "-")
                    raise CommandError(f"--{flag} is not JSON: {exc}") from None
        return fields

    @staticmethod
    def _owner(username: str | None):
        if not username:
            return None
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no user {username!r}")
        return user
