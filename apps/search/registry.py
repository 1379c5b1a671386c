"""The registry of searchable entities: each ``matchType`` the engine can search.

An app makes its records searchable from its ``AppConfig.ready()``::

    from apps.search.registry import Relation, register
    register(
        "block",
        lambda: Block.objects.all(),
        QueryFields.of("id", "status", json=("blockMetadata",)),
        block_document,
        relations=[Relation("cluster", local_field="cluster_id", remote_field="id")],
        id_key="id",
    )

so the engine never changes when a new entity type appears. A relation says how another
entity's query narrows this one: rows whose ``local_field`` is among the ``remote_field``
values of the other entity's matches (a block search narrowed by ``clusterQuery``).
Relations can also be added from the other side with :func:`add_relation` (the metrics
app adding ``clusterMetrics`` as a pre-filter of ``cluster``).

Registrations marked ``default=True`` (the search app's own guesses for models that other
apps own) never replace an explicit registration, whatever the order of ``ready()``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Model, QuerySet

from apps.core.errors import ValidationFailed
from apps.core.query import QueryFields

log = logging.getLogger("aios.search")

# The entity types AIOS names (reference inventory §1.19); others may be registered too.
KNOWN_MATCH_TYPES = (
    "component",
    "cluster",
    "block",
    "vdag",
    "policy",
    "policyFunction",
    "policyGraph",
    "clusterMetrics",
    "blockMetrics",
    "vdagMetrics",
)


class EntityNotAvailable(ValidationFailed):
    code = "entity_not_available"


@dataclass(frozen=True)
class Relation:
    """This entity is narrowed by ``target``'s query: ``local_field IN target.remote_field``."""

    target: str
    local_field: str
    remote_field: str = "pk"


@dataclass(frozen=True)
class SearchableEntity:
    match_type: str
    queryset_fn: Callable[[], QuerySet]
    fields: QueryFields
    serializer_fn: Callable[[Model], dict[str, Any]]
    relations: tuple[Relation, ...] = ()
    query_key: str = ""
    id_key: str = "id"  # the key of a serialized candidate that identifies it (ranking)
    default: bool = False
    ordering: tuple[str, ...] = field(default_factory=tuple)
    # Rewrites a query before it is compiled (e.g. the metrics app strips the reference's
    # ``cluster.`` / ``metrics.`` prefixes and turns numeric strings into numbers).
    prepare_query: Callable[[Any], Any] | None = None

    @property
    def key(self) -> str:
        return self.query_key or query_key_of(self.match_type)


_entities: dict[str, SearchableEntity] = {}
_extra_relations: dict[str, list[Relation]] = {}
_lock = threading.Lock()


def query_key_of(match_type: str) -> str:
    """``cluster`` -> ``clusterQuery``; ``clusterMetrics`` -> ``clusterMetricsQuery``."""
    return f"{match_type}Query"


def _as_relation(value: Relation | tuple) -> Relation:
    return value if isinstance(value, Relation) else Relation(*value)


def register(
    match_type: str,
    queryset_fn: Callable[[], QuerySet],
    fields: QueryFields,
    serializer_fn: Callable[[Model], dict[str, Any]],
    relations: Iterable[Relation | tuple] = (),
    *,
    query_key: str | None = None,
    id_key: str = "id",
    ordering: Iterable[str] = (),
    default: bool = False,
    prepare_query: Callable[[Any], Any] | None = None,
) -> SearchableEntity | None:
    """Make ``match_type`` searchable; an explicit registration replaces an earlier one,
    a ``default`` one only fills a gap. Returns the entity, or None when ignored."""
    entity = SearchableEntity(
        match_type=match_type,
        queryset_fn=queryset_fn,
        fields=fields,
        serializer_fn=serializer_fn,
        relations=tuple(_as_relation(r) for r in relations),
        query_key=query_key or "",
        id_key=id_key,
        default=default,
        ordering=tuple(ordering),
        prepare_query=prepare_query,
    )
    with _lock:
        current = _entities.get(match_type)
        if default and current is not None:
            return None
        _entities[match_type] = entity
    log.debug("event=search_entity_registered match_type=%s default=%s", match_type, default)
    return entity


def add_relation(match_type: str, target: str, local_field: str, remote_field: str = "pk") -> None:
    """Declare from outside that ``target``'s query narrows ``match_type``."""
    relation = Relation(target, local_field, remote_field)
    with _lock:
        relations = _extra_relations.setdefault(match_type, [])
        if relation not in relations:
            relations.append(relation)


def unregister(match_type: str) -> None:
    with _lock:
        _entities.pop(match_type, None)


def registered() -> dict[str, SearchableEntity]:
    with _lock:
        return dict(_entities)


def get(match_type: Any) -> SearchableEntity:
    """The entity for ``match_type``, or a 400 naming what is unknown or not yet there."""
    if not isinstance(match_type, str) or not match_type:
        raise ValidationFailed(
            "matchType must be a non-empty string",
            details=[{"field": "matchType", "allowed": sorted(registered())}],
        )
    entity = registered().get(match_type)
    if entity is not None:
        return entity
    available = sorted(registered())
    if match_type in KNOWN_MATCH_TYPES:
        raise EntityNotAvailable(
            f"matchType {match_type!r} is not available yet: no app has registered it "
            "(its models come with a later part of the system)",
            details=[{"field": "matchType", "value": match_type, "available": available}],
        )
    raise ValidationFailed(
        f"unknown matchType {match_type!r}",
        details=[{"field": "matchType", "value": match_type, "allowed": available}],
    )


def relations_of(entity: SearchableEntity) -> tuple[Relation, ...]:
    """Declared relations, those added from outside, then ones implied by foreign keys
    between registered entities' models (forward FKs, and the reverse FKs of metrics
    entities, which act as pre-filters)."""
    with _lock:
        extras = list(_extra_relations.get(entity.match_type, ()))
        entities = dict(_entities)
    relations = list(entity.relations)
    seen = {r.target for r in relations}
    for relation in extras:
        if relation.target not in seen:
            relations.append(relation)
            seen.add(relation.target)
    for relation in _fk_relations(entity, entities):
        if relation.target not in seen:
            relations.append(relation)
            seen.add(relation.target)
    return tuple(relations)


def _model_of(entity: SearchableEntity):
    try:
        return entity.queryset_fn().model
    except Exception:  # a broken adapter must not break every search
        log.warning("event=search_adapter_broken match_type=%s", entity.match_type, exc_info=True)
        return None


def _fk_relations(
    entity: SearchableEntity, entities: dict[str, SearchableEntity]
) -> list[Relation]:
    model = _model_of(entity)
    if model is None:
        return []
    by_model: dict[Any, list[str]] = {}
    for other in entities.values():
        other_model = _model_of(other) if other is not entity else None
        if other_model is not None:
            by_model.setdefault(other_model, []).append(other.match_type)
    found: list[Relation] = []
    for model_field in model._meta.get_fields():
        related = getattr(model_field, "related_model", None)
        for target in by_model.get(related, ()):
            if model_field.many_to_one and model_field.concrete:
                found.append(Relation(target, model_field.attname, "pk"))
            elif model_field.one_to_many and target.endswith("Metrics"):
                found.append(Relation(target, "pk", model_field.field.attname))
    return found
