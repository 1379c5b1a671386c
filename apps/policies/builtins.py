"""Seeding of the built-in policies (``block_sdk/builtin_policies/<name>/``) as ordinary records.

Each folder is packaged reproducibly (same files, same sha256) and registered as
``aios.<name>:1.0-stable``. A record whose archive sha differs from the folder's, or whose
fields differ from the folder's ``policy.json`` (description, tags, default parameters,
schemas: optional), is updated; one that matches is left alone. Used by ``manage.py
aios_seed_policies`` and by the data migration, which passes its historical model.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from block_sdk.builtin_policies import (
    BUILTIN_RELEASE_TAG,
    BUILTIN_URI_PREFIX,
    BUILTIN_VERSION,
    builtin_policy_folders,
    builtin_policy_uri,
)
from block_sdk.policy_runtime.archive import package_folder, sha256_hex, validate_archive

log = logging.getLogger("aios.policies.builtins")

RECORD_FIELDS = (
    "description",
    "tags",
    "metadata",
    "class_name",
    "policy_settings",
    "policy_parameters",
    "policy_input_schema",
    "policy_output_schema",
    "policy_settings_schema",
    "policy_parameters_schema",
    "management_commands_schema",
)


@dataclass(frozen=True)
class SeedResult:
    uri: str
    action: str  # "created" | "updated" | "unchanged"
    sha256: str


def _record_fields(folder: Path, name: str) -> dict[str, Any]:
    meta_path = folder / "policy.json"
    meta: dict[str, Any] = {}
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    fields = {key: meta[key] for key in RECORD_FIELDS if key in meta}
    if "description" not in fields:
        source = (folder / "code" / "function.py").read_text(encoding="utf-8")
        first = source.split('"""', 2)[1].strip().splitlines()[0] if '"""' in source else ""
        fields["description"] = first
    tags = list(fields.get("tags") or [])
    fields["tags"] = ["builtin", *[t for t in tags if t != "builtin"]]
    fields["metadata"] = {
        **(fields.get("metadata") or {}),
        "source": f"block_sdk/builtin_policies/{name}",
    }
    return fields


def _store(data: bytes, sha: str, fmt: str) -> str:
    name = f"policies/archives/{sha[:2]}/{sha}.{fmt}"
    if default_storage.exists(name):
        with default_storage.open(name, "rb") as fh:
            if sha256_hex(fh.read()) == sha:
                return name
        default_storage.delete(name)
    return default_storage.save(name, ContentFile(data))


def seed_builtin_policies(model: Any = None, only: list[str] | None = None) -> list[SeedResult]:
    """Create or update the built-in records; idempotent. ``model`` defaults to PolicyRule."""
    if model is None:
        from apps.policies.models import PolicyRule as model
    results: list[SeedResult] = []
    for name, folder in builtin_policy_folders().items():
        if only and name not in only:
            continue
        uri = builtin_policy_uri(name)
        data = package_folder(folder)
        info = validate_archive(data)
        fields = _record_fields(folder, name)
        rule = model.objects.filter(policy_rule_uri=uri).first()
        same_fields = rule is not None and all(
            getattr(rule, key) == value for key, value in fields.items()
        )
        if rule is not None and rule.code_sha256 == info.sha256 and same_fields:
            stored_name = _store(data, info.sha256, info.format)  # repairs a missing file
            if rule.code.name != stored_name:
                rule.code.name = stored_name
                rule.save(update_fields=["code"])
            results.append(SeedResult(uri, "unchanged", info.sha256))
            continue
        stored_name = _store(data, info.sha256, info.format)
        action = "updated" if rule is not None else "created"
        if rule is None:
            rule = model(
                policy_rule_uri=uri,
                name=f"{BUILTIN_URI_PREFIX}{name}",
                version=BUILTIN_VERSION,
                release_tag=BUILTIN_RELEASE_TAG,
            )
        for key, value in fields.items():
            setattr(rule, key, value)
        rule.type = "python_class_v1"
        rule.builtin = True
        rule.code.name = stored_name
        rule.code_sha256 = info.sha256
        rule.code_size = info.size
        rule.code_format = info.format
        rule.save()
        log.info("event=builtin_policy_seeded uri=%s action=%s sha256=%s", uri, action, info.sha256)
        results.append(SeedResult(uri, action, info.sha256))
    return results
