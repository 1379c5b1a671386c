"""Builders shared by the registries, search and parser tests: specs and policy archives."""

from __future__ import annotations

import copy
import io
import tarfile
import textwrap
import uuid
from typing import Any


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def component_values(name: str = "echo", version: str = "1.0.0", tag: str = "stable", **extra):
    values: dict[str, Any] = {
        "componentId": {"name": name, "version": version, "releaseTag": tag},
        "componentType": "model",
        "containerRegistryInfo": {
            "componentMode": "aios",
            "containerImageMetadata": {
                "entrypoint": "block_sdk.examples.echo:EchoBlock",
                "author": "ana",
            },
        },
        "componentMetadata": {"usecase": "echo", "framework": "python", "hardware": "cpu"},
        "componentInitData": {"greeting": "hi"},
        "componentInputProtocol": {"message": {"type": "string", "description": "text"}},
        "componentOutputProtocol": {"reply": {"type": "string"}},
        "policies": {"loadBalancer": {"policyRuleURI": "aios.round-robin:1.0-stable"}},
        "componentManagementCommandsTemplate": {
            "reset": {
                "description": "reset",
                "args": {"hard": {"type": "boolean", "required": False}},
            }
        },
        "componentInitSettings": {"batch_size": 4},
        "componentInitParameters": {"temperature": 0.7},
        "componentParametersProtocol": {"temperature": {"type": "number", "min": 0, "max": 2}},
        "componentInitSettingsProtocol": {"batch_size": {"type": "number", "min": 1, "max": 32}},
        "tags": ["echo", "text"],
    }
    values.update(extra)
    return values


def envelope(values: dict, *, template: str = "Parser/V1", at_body: bool = False, **header):
    body = (
        {"values": copy.deepcopy(values)}
        if at_body
        else {"spec": {"values": copy.deepcopy(values)}}
    )
    return {
        "header": {"templateUri": template, "parameters": header.get("parameters", {})},
        "body": body,
    }


def policy_archive(source: str) -> bytes:
    """A tar.gz holding ``code/function.py`` with ``source`` (an AIOSv1PolicyRule class)."""
    data = textwrap.dedent(source).encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("code/function.py")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def register_test_policy(source: str, name: str | None = None, **fields) -> str:
    """Register a policy with the policies system; returns its URI."""
    from apps.policies.services import register_policy

    rule = register_policy(
        name=name or unique("policy"),
        version="1.0",
        release_tag="test",
        archive=policy_archive(source),
        **fields,
    )
    return rule.policy_rule_uri
