"""One search/filter engine over every registered entity (reference inventory §1.19).

``filter_queryset`` compiles each ``<entity>Query`` of a filter with the core query
language over that entity's allow-list and follows the dependency paths declared in
:mod:`apps.search.registry` (a block search narrowed by its cluster's query and by the
block-metrics query; a cluster search pre-filtered by cluster metrics…); all parts are
combined with AND in one SQL query. ``search`` then optionally hands the candidates to a
ranking policy (sandboxed) that orders, scores or picks them.

Used by the parser's ``search``/``filter`` actions and ``POST /api/v1/search/`` now, and
by allocation, vDAG assignment and inference later.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db.models import QuerySet

from apps.core.errors import Unprocessable, ValidationFailed
from apps.core.query import QueryError, compile_query
from apps.registries.services.common import run_policy
from apps.search import registry
from apps.search.registry import SearchableEntity

log = logging.getLogger("aios.search")

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_CANDIDATES = 1000  # bound what a ranking policy receives


def _reachable_keys(match_type: str, visiting: frozenset[str] = frozenset()) -> set[str]:
    """Every filter key that can narrow ``match_type`` (its own and its relations').

    An entity already on the path contributes nothing: its key belongs to the search's
    origin, and counting it again would narrow the origin by a relation pointing back
    (a cluster search by ``clusterQuery`` would then only find clusters with metrics)."""
    if match_type in visiting:
        return set()
    entity = registry.registered().get(match_type)
    keys = {entity.key if entity else registry.query_key_of(match_type)}
    if entity is None:
        return keys
    for relation in registry.relations_of(entity):
        keys |= _reachable_keys(relation.target, visiting | {match_type})
    return keys


def allowed_filter_keys(match_type: str) -> list[str]:
    registry.get(match_type)
    return sorted(_reachable_keys(match_type))


def _check_filter(match_type: str, filter_: Any) -> dict:
    if filter_ is None:
        return {}
    if not isinstance(filter_, dict):
        raise ValidationFailed(
            "filter must be an object of <entity>Query keys",
            details=[{"field": "filter", "message": "expected an object"}],
        )
    allowed = _reachable_keys(match_type)
    unknown = sorted(key for key in filter_ if key not in allowed)
    if unknown:
        raise ValidationFailed(
            f"filter key {unknown[0]!r} does not apply to matchType {match_type!r}",
            details=[
                {"field": f"filter.{key}", "message": "not applicable", "allowed": sorted(allowed)}
                for key in unknown
            ],
        )
    return filter_


def _narrowed(entity: SearchableEntity, filter_: dict, visiting: frozenset[str]) -> QuerySet:
    queryset = entity.queryset_fn()
    key = entity.key
    if key in filter_:
        query = filter_[key]
        if entity.prepare_query is not None:
            query = entity.prepare_query(query)
        try:
            queryset = queryset.filter(compile_query(query, entity.fields))
        except QueryError as exc:
            raise QueryError(
                f"{key}: {exc.message}", details=[{"filterKey": key}, *exc.details]
            ) from None
    for relation in registry.relations_of(entity):
        if relation.target in visiting:
            continue
        if not _reachable_keys(relation.target, visiting | {entity.match_type}) & set(filter_):
            continue
        target = registry.get(relation.target)  # 400 when that entity is not available yet
        related = _narrowed(target, filter_, visiting | {entity.match_type})
        queryset = queryset.filter(
            **{f"{relation.local_field}__in": related.values(relation.remote_field)}
        )
    return queryset


def filter_queryset(match_type: str, filter_: dict | None = None) -> QuerySet:
    """The matching records of ``match_type`` as a queryset (not yet serialized)."""
    entity = registry.get(match_type)
    filter_ = _check_filter(match_type, filter_)
    queryset = _narrowed(entity, filter_, frozenset())
    if entity.ordering:
        queryset = queryset.order_by(*entity.ordering)
    elif not queryset.ordered:
        queryset = queryset.order_by("pk")
    return queryset


def _limit(value: Any, default: int = DEFAULT_LIMIT) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LIMIT:
        raise ValidationFailed(
            f"limit must be an integer from 1 to {MAX_LIMIT}",
            details=[{"field": "limit", "value": value}],
        )
    return value


def filter_entities(
    match_type: str, filter_: dict | None = None, *, limit: int | None = DEFAULT_LIMIT
) -> list[dict]:
    """Serialized matches of a filter, in the entity's order, at most ``limit``."""
    entity = registry.get(match_type)
    queryset = filter_queryset(match_type, filter_)
    return [entity.serializer_fn(obj) for obj in queryset[: _limit(limit)]]


def _normalize_rule(
    rule: str | dict | None, parameters: dict | None
) -> tuple[str, dict, dict] | None:
    if rule is None:
        return None
    if isinstance(rule, str):
        return rule, {}, dict(parameters or {})
    if not isinstance(rule, dict):
        raise ValidationFailed("rankingPolicyRule must be a URI or an object")
    if set(rule) == {"values"} and isinstance(rule["values"], dict):
        rule = rule["values"]
    uri = rule.get("policyRuleURI")
    if not isinstance(uri, str) or not uri:
        raise ValidationFailed(
            "rankingPolicyRule.policyRuleURI is required",
            details=[{"field": "rankingPolicyRule.policyRuleURI", "message": "required"}],
        )
    settings = rule.get("settings") or {}
    merged = {**(rule.get("parameters") or {}), **(parameters or {})}
    if not isinstance(settings, dict):
        raise ValidationFailed("rankingPolicyRule.settings must be an object")
    return uri, settings, merged


def search(
    match_type: str,
    filter: dict | None = None,  # the AIOS name, although it shadows the builtin
    *,
    ranking_policy_rule: str | dict | None = None,
    ranking_parameters: dict | None = None,
    limit: int | None = None,
) -> list[dict]:
    """Filter ``match_type`` then, with a ranking policy, let it order/score/pick.

    The policy receives ``{"candidates": [...], "query": {"matchType", "filter"}}`` and
    may return: a list of candidates, of ids, or of ``{"id"|<idKey>, "score"}``; a dict
    with ``results``/``ids``/``candidates`` holding such a list, or ``scores`` mapping
    id -> score; or one candidate (the best match). Candidates keep their order; a score
    given by the policy is added as ``_score``. The result is cut at ``limit`` (or the
    rule's ``parameters.return``).
    """
    entity = registry.get(match_type)
    rule = _normalize_rule(ranking_policy_rule, ranking_parameters)
    if rule is None:
        return filter_entities(match_type, filter, limit=_limit(limit))
    uri, settings, parameters = rule
    top_k = _limit(limit if limit is not None else parameters.get("return"))
    candidates = filter_entities(match_type, filter, limit=MAX_CANDIDATES)
    if not candidates:
        return []
    query = {"matchType": match_type, "filter": filter or {}}
    log.info(
        "event=search_rank match_type=%s policy=%s candidates=%d",
        match_type,
        uri,
        len(candidates),
    )
    outcome = run_policy(
        uri, {"candidates": candidates, "query": query}, parameters=parameters, settings=settings
    )
    return apply_ranking(entity, candidates, outcome, policy_rule_uri=uri)[:top_k]


def _id_of(entity: SearchableEntity, item: Any) -> tuple[str | None, Any]:
    if isinstance(item, str | int) and not isinstance(item, bool):
        return str(item), None
    if isinstance(item, dict):
        for key in (entity.id_key, "id"):
            if key in item and isinstance(item[key], str | int):
                return str(item[key]), item.get("score")
    return None, None


def apply_ranking(
    entity: SearchableEntity, candidates: list[dict], outcome: Any, *, policy_rule_uri: str
) -> list[dict]:
    """Turn a ranking policy's answer into the ordered list of candidates."""
    by_id = {}
    for candidate in candidates:
        candidate_id, _ = _id_of(entity, candidate)
        if candidate_id is not None:
            by_id.setdefault(candidate_id, candidate)

    def bad(message: str) -> Unprocessable:
        return Unprocessable(
            f"ranking policy {policy_rule_uri!r} {message}",
            code="ranking_policy_error",
            details=[{"policyRuleURI": policy_rule_uri, "idKey": entity.id_key}],
        )

    items: list[Any]
    if isinstance(outcome, dict):
        if isinstance(outcome.get("scores"), dict):
            scores = outcome["scores"]
            items = [
                {"id": key, "score": value}
                for key, value in sorted(
                    scores.items(), key=lambda kv: _score_key(kv[1]), reverse=True
                )
            ]
        else:
            listed = next(
                (outcome[k] for k in ("results", "ids", "candidates", "ranked") if k in outcome),
                None,
            )
            items = listed if isinstance(listed, list) else [outcome]
    elif isinstance(outcome, list):
        items = outcome
    elif outcome is None:
        items = []
    else:
        raise bad(f"returned {type(outcome).__name__}; expected a list or an object")

    ranked: list[dict] = []
    seen: set[str] = set()
    for item in items:
        candidate_id, score = _id_of(entity, item)
        if candidate_id is None:
            raise bad(f"returned an item without an id ({entity.id_key!r} or 'id'): {item!r:.200}")
        if candidate_id not in by_id:
            raise bad(f"returned {candidate_id!r}, which is not one of the candidates")
        if candidate_id in seen:
            continue
        seen.add(candidate_id)
        result = dict(by_id[candidate_id])
        if score is not None:
            result["_score"] = score
        ranked.append(result)
    return ranked


def _score_key(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("-inf")


def run_ir(values: dict, *, ranked: bool | None = None) -> dict[str, Any]:
    """Run a parser search/filter IR (``body.values``): ``{"matchType", "filter",
    "rankingPolicyRule", "limit"}``. In a similarity search the filter may also sit in
    ``rankingPolicyRule.parameters.filterRule`` (``{"matchType", "filter"}``), as in
    AIOS, and then names the candidates' entity."""
    rule = values.get("rankingPolicyRule")
    if isinstance(rule, dict) and set(rule) == {"values"}:
        rule = rule["values"]
    match_type = values.get("matchType")
    filter_ = values.get("filter")
    if ranked is None:
        ranked = rule is not None
    if ranked and isinstance(rule, dict):
        filter_rule = (rule.get("parameters") or {}).get("filterRule")
        if isinstance(filter_rule, dict):
            match_type = filter_rule.get("matchType", match_type)
            if filter_ is None:
                filter_ = filter_rule.get("filter")
    results = search(
        match_type,
        filter_,
        ranking_policy_rule=rule if ranked else None,
        limit=values.get("limit"),
    )
    return {"matchType": match_type, "count": len(results), "results": results}
