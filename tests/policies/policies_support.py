"""Archive builders and policy sources for the policies app tests (imported by the tests)."""

from __future__ import annotations

import io
import tarfile
import uuid
import zipfile
from typing import Any

from rest_framework.test import APIClient

COUNTER_POLICY = '''
class AIOSv1PolicyRule:
    """Counts calls in its own state (for T4 functions)."""

    def __init__(self, rule_id, settings, parameters):
        self.count = 0
        self.step = int(parameters.get("step", 1))

    def eval(self, parameters, input_data, context):
        import os
        self.count += self.step
        return {"count": self.count, "input": input_data, "pid": os.getpid()}

    def management(self, action, data):
        if action == "get_state":
            return {"count": self.count}
        if action == "reset":
            self.count = 0
            return {"count": 0}
        raise ValueError(f"unknown action {action}")
'''

ECHO_POLICY = """
class AIOSv1PolicyRule:
    def __init__(self, rule_id, settings, parameters):
        self.rule_id = rule_id
        self.settings = settings

    def eval(self, parameters, input_data, context):
        return {"input": input_data, "parameters": parameters, "settings": self.settings,
                "rule_id": self.rule_id}

    def management(self, action, data):
        return {"action": action, "data": data}
"""

# Behaviour chosen by input_data["op"]: one archive covers every bad case of issue 3.
BEHAVIOUR_POLICY = """
import os
import time


class AIOSv1PolicyRule:
    def __init__(self, rule_id, settings, parameters):
        pass

    def eval(self, parameters, input_data, context):
        op = input_data.get("op")
        if op == "ok":
            return {"ok": True}
        if op == "raise":
            raise ValueError("boom from policy")
        if op == "loop":
            while True:
                pass
        if op == "allocate":
            block = bytearray(10 * 1024 ** 3)
            return {"size": len(block)}
        if op == "exit":
            os._exit(3)
        if op == "fork":
            pid = os.fork()
            if pid == 0:
                time.sleep(60)
                os._exit(0)
            return {"forked": pid}
        if op == "env":
            return {"env": dict(os.environ)}
        if op == "not_json":
            return {"value": object()}
        if op == "sleep":
            time.sleep(float(input_data.get("seconds", 0.1)))
            return {"slept": True}
        raise KeyError(op)
"""

ARITHMETIC_POLICY = '''
class AIOSv1PolicyRule:
    """eval: {"value": n} or {parent: {"value": n}, ...} -> {"value": f(n)}."""

    def __init__(self, rule_id, settings, parameters):
        self.op = parameters.get("op", "add")
        self.k = parameters.get("k", 1)

    def eval(self, parameters, input_data, context):
        if "value" in input_data:
            value = input_data["value"]
        else:
            value = sum(v["value"] for v in input_data.values())
        value = value + self.k if self.op == "add" else value * self.k
        return {"value": value}
'''


def unique_source(source: str) -> str:
    """Make an archive unique (its own sha256) so tests never share stored files."""
    return f"# {uuid.uuid4().hex}\n{source}"


def tar_gz(files: dict[str, str | bytes], extra: list[tarfile.TarInfo] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for info in extra or []:
            tf.addfile(info)
    return buf.getvalue()


def zip_bytes(files: dict[str, str | bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, content in files.items():
            zf.writestr(name, content)
    return buf.getvalue()


def policy_archive(source: str, fmt: str = "tar.gz", unique: bool = True) -> bytes:
    code = unique_source(source) if unique else source
    files = {"code/function.py": code}
    return zip_bytes(files) if fmt == "zip" else tar_gz(files)


def upload(
    client: APIClient,
    name: str,
    source: str | None = None,
    *,
    archive: bytes | None = None,
    version: str = "1.0",
    tag: str = "test",
    filename: str = "policy.tar.gz",
    **fields: Any,
):
    """POST a multipart create; JSON-valued fields are sent as JSON strings."""
    import json

    data = {"name": name, "version": version, "release_tag": tag}
    for key, value in fields.items():
        data[key] = value if isinstance(value, str) else json.dumps(value)
    payload = archive if archive is not None else policy_archive(source or ECHO_POLICY)
    data["code"] = _named_file(payload, filename)
    return client.post("/api/v1/policies/", data, format="multipart")


def _named_file(payload: bytes, filename: str):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(filename, payload, content_type="application/octet-stream")


def execute(client: APIClient, uri: str, input_data: Any, **body: Any):
    return client.post(
        f"/api/v1/policies/{uri}/execute/", {"input_data": input_data, **body}, format="json"
    )
