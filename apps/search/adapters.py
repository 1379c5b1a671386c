"""Default search adapters for entity types whose models other apps own.

The owning app should register its own adapter (its field names, documents and
relations); until it does, a model found under a conventional name is made searchable
with every concrete field in its allow-list (snake_case and camelCase names; JSON
columns with dotted paths) and a plain document of its columns. Nothing here fails when
the model does not exist yet: that entity then answers "not available yet".
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from django.apps import apps
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models

from apps.core.query import QueryFields
from apps.search import registry

log = logging.getLogger("aios.search")

# matchType -> candidate (app_label, ModelName) pairs, first found wins.
CONVENTIONAL_MODELS: dict[str, tuple[tuple[str, str], ...]] = {
    "policy": (("policies", "PolicyRule"), ("policies", "Policy")),
    "policyFunction": (("policies", "PolicyFunction"), ("policies", "Function")),
    "policyGraph": (("policies", "PolicyGraph"), ("policies", "Graph")),
    "cluster": (("clusters", "Cluster"),),
    "block": (("blocks", "Block"),),
    "vdag": (("vdags", "VDAG"), ("vdags", "Vdag"), ("vdags", "VDag")),
    "clusterMetrics": (("metrics", "ClusterMetrics"), ("metrics", "ClusterMetric")),
    "blockMetrics": (("metrics", "BlockMetrics"), ("metrics", "BlockMetric")),
    "vdagMetrics": (("metrics", "VDAGMetrics"), ("metrics", "VdagMetrics")),
}


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def model_query_fields(model: type[models.Model]) -> QueryFields:
    """Every concrete column of ``model``; JSON columns accept dotted paths."""
    fields: dict[str, str] = {}
    json_fields: dict[str, str] = {}
    for field in model._meta.concrete_fields:
        names = {field.name, camel(field.name)}
        if isinstance(field, models.JSONField):
            for name in names:
                json_fields[name] = field.name
            continue
        if field.is_relation:
            for name in {field.attname, camel(field.attname)}:
                fields[name] = field.attname
            for name in names:
                fields[f"{name}.id"] = field.attname
            continue
        for name in names:
            fields[name] = field.name
    if "id" not in fields:
        fields["id"] = "pk"
    return QueryFields(fields=fields, json_fields=json_fields)


class _Encoder(DjangoJSONEncoder):
    def default(self, o: Any) -> Any:
        try:
            return super().default(o)
        except TypeError:
            return str(o)  # files, ranges, anything else: their text form


def model_document(obj: models.Model) -> dict[str, Any]:
    """The columns of a row as JSON-safe values (``id`` is always present)."""
    data: dict[str, Any] = {}
    for field in obj._meta.concrete_fields:
        value = getattr(obj, field.attname)
        if isinstance(field, models.FileField):
            value = value.name if value else ""
        data[field.attname] = value
    data.setdefault("id", obj.pk)
    return json.loads(json.dumps(data, cls=_Encoder))


def register_model_default(match_type: str, model: type[models.Model]) -> bool:
    pk_name = model._meta.pk.attname
    id_key = "id" if pk_name == "id" else pk_name
    uri_fields = [
        f.attname for f in model._meta.concrete_fields if f.unique and re.search(r"uri$", f.name)
    ]
    if uri_fields:
        id_key = uri_fields[0]
    entity = registry.register(
        match_type,
        model._default_manager.all,
        model_query_fields(model),
        model_document,
        id_key=id_key,
        default=True,
    )
    return entity is not None


def register_defaults() -> list[str]:
    """Register a default adapter for every conventional model that exists."""
    added = []
    for match_type, candidates in CONVENTIONAL_MODELS.items():
        for app_label, model_name in candidates:
            try:
                model = apps.get_model(app_label, model_name)
            except LookupError:
                continue
            if register_model_default(match_type, model):
                added.append(match_type)
            break
    if added:
        log.info("event=search_default_adapters match_types=%s", ",".join(added))
    return added
