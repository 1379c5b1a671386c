"""Policy schemas: JSON Schema, or AIOS's template attribute format translated to it.

AIOS writes policy schemas as template attributes (``type``, ``description``, ``pattern``,
``min``, ``max``, ``choices``, ``max_length``, ``items``, ``properties``). Both forms are
accepted; the attribute keywords are translated (``choices`` → ``enum``, ``min`` → ``minimum``,
``max_length`` → ``maxLength``…) and Python type names (``str``, ``int``, ``dict``…) mapped to
JSON types, so one validator (``jsonschema``) enforces either.
"""

from __future__ import annotations

from typing import Any

import jsonschema

from apps.core.errors import ValidationFailed

_TYPE_NAMES = {
    "str": "string",
    "string": "string",
    "text": "string",
    "int": "integer",
    "integer": "integer",
    "float": "number",
    "number": "number",
    "bool": "boolean",
    "boolean": "boolean",
    "dict": "object",
    "object": "object",
    "json": "object",
    "list": "array",
    "array": "array",
    "null": "null",
    "any": None,
}
_KEYWORDS = {
    "choices": "enum",
    "min": "minimum",
    "max": "maximum",
    "max_length": "maxLength",
    "min_length": "minLength",
    "max_items": "maxItems",
    "min_items": "minItems",
}
# A "properties" member that is itself a schema (not a map of property schemas) is rare;
# these keys mark a mapping whose values are schemas to translate recursively.
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions")
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")
_SCHEMA_ONE = ("items", "additionalProperties", "not", "if", "then", "else", "contains")


def to_json_schema(schema: Any) -> dict[str, Any] | None:
    """The JSON Schema for a stored policy schema; ``None`` when there is none (``{}``)."""
    if not schema:
        return None
    if not isinstance(schema, dict):
        raise ValidationFailed(f"a schema must be a JSON object, got {type(schema).__name__}")
    return _translate(schema)


def _translate(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "type" and isinstance(value, str):
            mapped = _TYPE_NAMES.get(value.lower(), value)
            if mapped is not None:
                out["type"] = mapped
        elif key in _KEYWORDS and _KEYWORDS[key] not in node:
            out[_KEYWORDS[key]] = value
        elif key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {k: _translate(v) for k, v in value.items()}
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            out[key] = [_translate(v) for v in value]
        elif key in _SCHEMA_ONE and isinstance(value, dict):
            out[key] = _translate(value)
        elif key == "required" and isinstance(value, bool):
            continue  # an attribute-format flag on the property itself, not JSON Schema
        else:
            out[key] = value
    return out


def check_schema(schema: Any, field: str) -> None:
    """Refuse a schema that is not a valid (translated) JSON Schema, naming the field."""
    translated = to_json_schema(schema)
    if translated is None:
        return
    cls = jsonschema.validators.validator_for(translated)
    try:
        cls.check_schema(translated)
    except jsonschema.SchemaError as exc:
        raise ValidationFailed(
            f"{field} is not a valid schema: {exc.message}",
            details=[{"field": field, "message": exc.message}],
        ) from None


def first_error(schema: Any, value: Any) -> str | None:
    """The most relevant validation error of ``value`` against ``schema``, or ``None``."""
    translated = to_json_schema(schema)
    if translated is None:
        return None
    validator = jsonschema.validators.validator_for(translated)(translated)
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    return f"at {where}: {error.message}"


def check_management_commands_schema(value: Any) -> None:
    """``management_commands_schema`` is a list of ``{name, description?, schema?}``."""
    if not isinstance(value, list):
        raise ValidationFailed("management_commands_schema must be a list")
    for index, item in enumerate(value):
        field = f"management_commands_schema[{index}]"
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ValidationFailed(f"{field} must be an object with a 'name'")
        if "schema" in item:
            check_schema(item["schema"], f"{field}.schema")
