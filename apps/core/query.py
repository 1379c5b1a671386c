"""The query language of every registry, compiled to Django ``Q`` over an allow-list.

Two input forms are accepted and may be nested inside each other's lists:

- AIOS search conditions::

    {"variable": "metadata.author", "operator": "==", "value": "ana"}
    {"logicalOperator": "AND", "conditions": [...]}

  operators ``== != IN > >= < <= LIKE`` (``LIKE`` uses SQL ``%`` and ``_`` wildcards);

- Mongo-style filters::

    {"$and": [{"name": {"$regex": "^yolo"}}, {"metadata.gpus": {"$gte": 2}}]}

  operators ``$and $or $not $in $nin $eq $ne $gt $gte $lt $lte $regex $options $exists``.

Field names are resolved through a :class:`QueryFields` allow-list: a public name maps to an
ORM path, and a declared JSON field accepts dotted sub-paths (``metadata.a.b``). Nothing the
caller sends reaches SQL except as a bound parameter: JSON keys become ``KeyTransform``
expressions, never lookup strings, so a key such as ``regex`` or ``a__b`` cannot change the
query's meaning. Anything unknown raises :class:`QueryError` naming it (a 400 at the API).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from django.db.models import F, JSONField, Q
from django.db.models.fields.json import HasKey, KeyTextTransform, KeyTransform
from django.db.models.functions import Cast

from apps.core.errors import ApiError

MAX_DEPTH = 12
MAX_CONDITIONS = 256
MAX_LIST = 1000
MAX_PATTERN = 512
JSON_KEY_RE = re.compile(r"^[A-Za-z0-9_\-@$ ]{1,128}$")

AIOS_OPERATORS = {
    "==": "exact",
    "!=": "exact",
    "IN": "in",
    ">": "gt",
    ">=": "gte",
    "<": "lt",
    "<=": "lte",
    "LIKE": "regex",
}
MONGO_FIELD_OPERATORS = {
    "$eq": "exact",
    "$ne": "exact",
    "$in": "in",
    "$nin": "in",
    "$gt": "gt",
    "$gte": "gte",
    "$lt": "lt",
    "$lte": "lte",
    "$regex": "regex",
    "$exists": "exists",
    "$not": "not",
    "$options": "options",
}
NEGATED = {"!=", "$ne", "$nin"}


class QueryError(ApiError):
    code = "invalid_query"


@dataclass(frozen=True)
class QueryFields:
    """The allow-list: public field name -> ORM path; JSON fields accept dotted sub-paths."""

    fields: dict[str, str] = field(default_factory=dict)
    json_fields: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, *names: str, json: tuple[str, ...] = (), **aliases: str) -> QueryFields:
        mapping = {name: name for name in names}
        mapping.update({alias.replace("__", "."): path for alias, path in aliases.items()})
        return cls(mapping, {name: name for name in json})

    def public_names(self) -> list[str]:
        return sorted([*self.fields, *(f"{name}.<key>" for name in self.json_fields)])


@dataclass(frozen=True)
class _Target:
    orm_path: str | None  # a plain column
    json_root: str | None = None  # a JSON column ...
    json_keys: tuple[str, ...] = ()  # ... and the keys inside it

    def expression(self):
        expr: Any = _json_column(self.json_root)
        for key in self.json_keys:
            expr = KeyTransform(key, expr)
        return expr


def _json_column(name: str):
    # The cast is a no-op in SQL but gives the expression a JSONField output before the
    # query resolves it, so comparison values are sent as jsonb (``'2'::jsonb``).
    return Cast(F(name), output_field=JSONField())


def like_to_regex(pattern: str) -> str:
    """SQL LIKE (``%`` any run, ``_`` one char) as an anchored regular expression."""
    out = []
    for char in pattern:
        if char == "%":
            out.append(".*")
        elif char == "_":
            out.append(".")
        else:
            out.append(re.escape(char))
    return "^" + "".join(out) + "$"


class _Compiler:
    def __init__(self, allowed: QueryFields):
        self.allowed = allowed
        self.count = 0

    # -- field resolution -------------------------------------------------------
    def resolve(self, name: Any) -> _Target:
        if not isinstance(name, str) or not name:
            raise QueryError(f"field name must be a non-empty string, got {name!r}")
        if name in self.allowed.fields:
            return _Target(self.allowed.fields[name])
        root, _, rest = name.partition(".")
        if root in self.allowed.json_fields and rest:
            keys = tuple(rest.split("."))
            bad = [key for key in keys if not JSON_KEY_RE.match(key)]
            if bad:
                raise QueryError(
                    f"invalid key {bad[0]!r} in field {name!r}",
                    details=[{"field": name, "message": "keys are letters, digits, _ - @ $"}],
                )
            return _Target(None, self.allowed.json_fields[root], keys)
        if root in self.allowed.json_fields:
            return _Target(self.allowed.json_fields[root])
        raise QueryError(
            f"unknown field {name!r}",
            details=[{"field": name, "allowed": self.allowed.public_names()}],
        )

    # -- leaves -----------------------------------------------------------------
    def leaf(self, target: _Target, lookup: str, value: Any, *, negate: bool, label: str) -> Q:
        self.count += 1
        if self.count > MAX_CONDITIONS:
            raise QueryError(f"query has more than {MAX_CONDITIONS} conditions")
        if lookup == "in":
            if not isinstance(value, list):
                raise QueryError(f"operator {label} needs a list value, got {value!r}")
            if len(value) > MAX_LIST:
                raise QueryError(f"operator {label} takes at most {MAX_LIST} values")
        elif isinstance(value, dict | list) and lookup not in {"exact"}:
            raise QueryError(f"operator {label} needs a scalar value, got {value!r}")
        if lookup == "regex":
            if not isinstance(value, str) or len(value) > MAX_PATTERN:
                raise QueryError(f"operator {label} needs a pattern string (≤{MAX_PATTERN} chars)")
            try:
                re.compile(value)
            except re.error as exc:
                raise QueryError(f"invalid regular expression {value!r}: {exc}") from None
        q = self._q(target, lookup, value)
        return ~q if negate else q

    def _q(self, target: _Target, lookup: str, value: Any) -> Q:
        if target.json_root is None:
            return Q(**{f"{target.orm_path}__{lookup}": value})
        expr = target.expression()
        if lookup == "exists":
            return Q(HasKey(self._parent(target), target.json_keys[-1]))
        lookup_class = expr.get_lookup(lookup)
        if lookup_class is None:  # pragma: no cover - every lookup we emit exists
            raise QueryError(f"operator {lookup!r} does not apply to JSON paths")
        if lookup in {"regex", "iregex"}:
            # Regexes match the text of a JSON value, not its JSON encoding.
            text_expr = KeyTextTransform(target.json_keys[-1], self._parent(target))
            return Q(text_expr.get_lookup(lookup)(text_expr, value))
        return Q(lookup_class(expr, value))

    @staticmethod
    def _parent(target: _Target):
        parent: Any = _json_column(target.json_root)
        for key in target.json_keys[:-1]:
            parent = KeyTransform(key, parent)
        return parent

    # -- AIOS conditions ----------------------------------------------------------
    def aios(self, node: Any, depth: int) -> Q:
        self._depth(depth)
        if not isinstance(node, dict):
            raise QueryError(f"a condition must be an object, got {node!r}")
        if "logicalOperator" in node or "conditions" in node:
            operator = str(node.get("logicalOperator", "AND")).upper()
            if operator not in {"AND", "OR"}:
                raise QueryError(
                    f"unknown logicalOperator {node.get('logicalOperator')!r}",
                    details=[{"allowed": ["AND", "OR"]}],
                )
            conditions = node.get("conditions")
            if not isinstance(conditions, list) or not conditions:
                raise QueryError("'conditions' must be a non-empty list")
            return self._combine([self.any(c, depth + 1) for c in conditions], operator)
        unknown_keys = set(node) - {"variable", "operator", "value"}
        if unknown_keys or "variable" not in node or "operator" not in node:
            raise QueryError(
                "a condition is {variable, operator, value} or {logicalOperator, conditions}",
                details=[{"unexpected": sorted(unknown_keys)}] if unknown_keys else [],
            )
        operator = node["operator"]
        op_key = operator.upper() if isinstance(operator, str) else operator
        if op_key not in AIOS_OPERATORS:
            raise QueryError(
                f"unknown operator {operator!r}",
                details=[{"operator": operator, "allowed": list(AIOS_OPERATORS)}],
            )
        target = self.resolve(node["variable"])
        value = node.get("value")
        lookup = AIOS_OPERATORS[op_key]
        if op_key == "LIKE":
            if not isinstance(value, str):
                raise QueryError(f"operator LIKE needs a string pattern, got {value!r}")
            value = like_to_regex(value)
        return self.leaf(target, lookup, value, negate=op_key in NEGATED, label=str(operator))

    # -- Mongo filters ----------------------------------------------------------
    def mongo(self, node: Any, depth: int) -> Q:
        self._depth(depth)
        if not isinstance(node, dict):
            raise QueryError(f"a filter must be an object, got {node!r}")
        parts: list[Q] = []
        for key, value in node.items():
            if key in {"$and", "$or"}:
                if not isinstance(value, list) or not value:
                    raise QueryError(f"{key} needs a non-empty list")
                parts.append(
                    self._combine(
                        [self.any(v, depth + 1) for v in value], "AND" if key == "$and" else "OR"
                    )
                )
            elif key == "$not":
                parts.append(~self.any(value, depth + 1))
            elif key.startswith("$"):
                raise QueryError(
                    f"unknown operator {key!r}",
                    details=[{"operator": key, "allowed": ["$and", "$or", "$not"]}],
                )
            else:
                parts.append(self._mongo_field(key, value, depth + 1))
        if not parts:
            return Q()
        return self._combine(parts, "AND")

    def _mongo_field(self, name: str, spec: Any, depth: int) -> Q:
        self._depth(depth)
        target = self.resolve(name)
        if not (isinstance(spec, dict) and any(str(k).startswith("$") for k in spec)):
            return self.leaf(target, "exact", spec, negate=False, label="$eq")
        unknown = [k for k in spec if k not in MONGO_FIELD_OPERATORS]
        if unknown:
            raise QueryError(
                f"unknown operator {unknown[0]!r}",
                details=[
                    {"operator": op, "allowed": list(MONGO_FIELD_OPERATORS)} for op in unknown
                ],
            )
        options = spec.get("$options", "")
        if not isinstance(options, str) or set(options) - {"i"}:
            raise QueryError(f"$options supports only 'i', got {options!r}")
        parts: list[Q] = []
        for op, value in spec.items():
            if op == "$options":
                continue
            if op == "$not":
                parts.append(~self._mongo_field(name, value, depth + 1))
                continue
            if op == "$exists":
                if not isinstance(value, bool):
                    raise QueryError(f"$exists needs true or false, got {value!r}")
                parts.append(self._exists(target, value))
                continue
            lookup = MONGO_FIELD_OPERATORS[op]
            if lookup == "regex" and "i" in options:
                lookup = "iregex"
            parts.append(self.leaf(target, lookup, value, negate=op in NEGATED, label=op))
        return self._combine(parts, "AND")

    def _exists(self, target: _Target, present: bool) -> Q:
        self.count += 1
        if target.json_root is not None and target.json_keys:
            q = self._q(target, "exists", None)
        else:
            q = Q(**{f"{target.orm_path or target.json_root}__isnull": False})
        return q if present else ~q

    # -- shared ---------------------------------------------------------------
    def any(self, node: Any, depth: int) -> Q:
        if isinstance(node, dict) and ("variable" in node or "logicalOperator" in node):
            return self.aios(node, depth)
        return self.mongo(node, depth)

    @staticmethod
    def _combine(parts: list[Q], operator: str) -> Q:
        result = parts[0]
        for part in parts[1:]:
            result = (result & part) if operator == "AND" else (result | part)
        return result

    @staticmethod
    def _depth(depth: int) -> None:
        if depth > MAX_DEPTH:
            raise QueryError(f"query is nested deeper than {MAX_DEPTH} levels")


def _reject_nul(value: Any, depth: int = 0) -> None:
    """PostgreSQL text cannot hold NUL; say so as a query error instead of a 500."""
    if depth > MAX_DEPTH * 4:
        return
    if isinstance(value, str):
        if "\x00" in value:
            raise QueryError("strings in a query must not contain NUL (\\x00) characters")
    elif isinstance(value, dict):
        for key, item in value.items():
            _reject_nul(key, depth + 1)
            _reject_nul(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _reject_nul(item, depth + 1)


def compile_query(query: Any, allowed: QueryFields) -> Q:
    """Compile an AIOS condition tree or a Mongo-style filter into a ``Q``."""
    if query in (None, {}):
        return Q()
    _reject_nul(query)
    return _Compiler(allowed).any(query, 0)


def apply_query(queryset, query: Any, allowed: QueryFields):
    return queryset.filter(compile_query(query, allowed))
