"""The query language compiled to Q and run against real PostgreSQL rows (Task records)."""

import pytest

from apps.core.query import QueryError, QueryFields, compile_query, like_to_regex
from apps.tasks.models import Task

FIELDS = QueryFields.of(
    "task_type", "task_status", "progress", json=("task_data",), **{"kind": "task_type"}
)


@pytest.fixture
def rows(db):
    data = [
        ("alpha", "pending", 0, {"gpus": 1, "owner": {"name": "ana"}, "tags": ["a", "b"]}),
        ("beta", "completed", 100, {"gpus": 4, "owner": {"name": "bo"}, "region": "eu"}),
        ("gamma", "failed", 40, {"gpus": 2, "owner": {"name": "ana"}, "regex": "x"}),
        ("delta", "in_progress", 60, {"owner": {"name": "cy"}}),
    ]
    for task_type, status, progress, task_data in data:
        Task.objects.create(
            task_type=task_type, task_status=status, progress=progress, task_data=task_data
        )


def run(query):
    return sorted(
        Task.objects.filter(compile_query(query, FIELDS)).values_list("task_type", flat=True)
    )


@pytest.mark.parametrize(
    "query,expected",
    [
        ({"variable": "task_type", "operator": "==", "value": "beta"}, ["beta"]),
        ({"variable": "task_type", "operator": "!=", "value": "beta"}, ["alpha", "delta", "gamma"]),
        (
            {"variable": "task_type", "operator": "IN", "value": ["alpha", "gamma"]},
            ["alpha", "gamma"],
        ),
        ({"variable": "progress", "operator": ">", "value": 40}, ["beta", "delta"]),
        ({"variable": "progress", "operator": ">=", "value": 40}, ["beta", "delta", "gamma"]),
        ({"variable": "progress", "operator": "<", "value": 40}, ["alpha"]),
        ({"variable": "progress", "operator": "<=", "value": 40}, ["alpha", "gamma"]),
        ({"variable": "task_type", "operator": "LIKE", "value": "%ta"}, ["beta", "delta"]),
        ({"variable": "task_type", "operator": "like", "value": "g_mma"}, ["gamma"]),
        ({"variable": "kind", "operator": "==", "value": "alpha"}, ["alpha"]),
    ],
)
def test_aios_operators_on_columns(rows, query, expected):
    assert run(query) == expected


@pytest.mark.parametrize(
    "query,expected",
    [
        ({"variable": "task_data.gpus", "operator": ">=", "value": 2}, ["beta", "gamma"]),
        (
            {"variable": "task_data.owner.name", "operator": "==", "value": "ana"},
            ["alpha", "gamma"],
        ),
        (
            {"variable": "task_data.owner.name", "operator": "IN", "value": ["bo", "cy"]},
            ["beta", "delta"],
        ),
        (
            {"variable": "task_data.owner.name", "operator": "LIKE", "value": "a%"},
            ["alpha", "gamma"],
        ),
        ({"variable": "task_data.region", "operator": "==", "value": "eu"}, ["beta"]),
    ],
)
def test_aios_operators_on_json_paths(rows, query, expected):
    assert run(query) == expected


def test_aios_nested_logic(rows):
    query = {
        "logicalOperator": "OR",
        "conditions": [
            {"variable": "task_type", "operator": "==", "value": "delta"},
            {
                "logicalOperator": "AND",
                "conditions": [
                    {"variable": "task_data.owner.name", "operator": "==", "value": "ana"},
                    {"variable": "progress", "operator": ">", "value": 10},
                ],
            },
        ],
    }
    assert run(query) == ["delta", "gamma"]


@pytest.mark.parametrize(
    "query,expected",
    [
        ({"task_type": "beta"}, ["beta"]),
        ({"task_type": {"$eq": "beta"}}, ["beta"]),
        ({"task_type": {"$ne": "beta"}}, ["alpha", "delta", "gamma"]),
        ({"task_type": {"$in": ["alpha", "beta"]}}, ["alpha", "beta"]),
        ({"task_type": {"$nin": ["alpha", "beta"]}}, ["delta", "gamma"]),
        ({"progress": {"$gt": 0, "$lt": 100}}, ["delta", "gamma"]),
        ({"progress": {"$gte": 60}}, ["beta", "delta"]),
        ({"progress": {"$lte": 40}}, ["alpha", "gamma"]),
        ({"task_type": {"$regex": "^(al|ga)"}}, ["alpha", "gamma"]),
        ({"task_type": {"$regex": "^BETA$", "$options": "i"}}, ["beta"]),
        ({"task_data.region": {"$exists": True}}, ["beta"]),
        ({"task_data.gpus": {"$exists": False}}, ["delta"]),
        ({"task_data.gpus": {"$gte": 2}}, ["beta", "gamma"]),
        ({"task_data.owner.name": {"$regex": "^a"}}, ["alpha", "gamma"]),
        ({"task_type": {"$not": {"$in": ["alpha"]}}}, ["beta", "delta", "gamma"]),
        ({"$not": {"task_type": "alpha"}}, ["beta", "delta", "gamma"]),
        ({"$and": [{"progress": {"$gt": 0}}, {"task_data.owner.name": "ana"}]}, ["gamma"]),
        ({"$or": [{"task_type": "alpha"}, {"task_data.gpus": 4}]}, ["alpha", "beta"]),
        (
            {
                "$or": [
                    {"$and": [{"progress": 0}]},
                    {"variable": "task_type", "operator": "==", "value": "beta"},
                ]
            },
            ["alpha", "beta"],
        ),
        ({}, ["alpha", "beta", "delta", "gamma"]),
    ],
)
def test_mongo_operators(rows, query, expected):
    assert run(query) == expected


def test_json_key_named_like_a_lookup_is_just_a_key(rows):
    # "regex" is a key inside task_data of gamma, not a lookup injected into SQL.
    assert run({"task_data.regex": "x"}) == ["gamma"]
    # "__" inside a key is part of the key's name, never a Django lookup.
    assert run({"task_data.gpus__gt": {"$exists": True}}) == []
    assert run({"task_data.gpus__gt": 0}) == []


@pytest.mark.parametrize(
    "query,named",
    [
        ({"$where": "sleep(10)"}, "$where"),
        ({"task_type": {"$where": "1"}}, "$where"),
        ({"task_type": {"$elemMatch": {}}}, "$elemMatch"),
        ({"variable": "task_type", "operator": "~=", "value": "x"}, "~="),
        ({"logicalOperator": "XOR", "conditions": [{"task_type": "a"}]}, "XOR"),
        ({"password": "x"}, "password"),
        ({"owner__password": "x"}, "owner__password"),
        ({"variable": "owner.password", "operator": "==", "value": "x"}, "owner.password"),
        ({"task_data.a'b": 1}, "a'b"),
    ],
)
def test_unknown_operators_and_fields_are_named(rows, query, named):
    with pytest.raises(QueryError) as info:
        compile_query(query, FIELDS)
    assert named in info.value.message or named in str(info.value.details)


@pytest.mark.parametrize(
    "query,message",
    [
        ({"variable": "task_type", "operator": "IN", "value": "alpha"}, "list"),
        ({"task_type": {"$regex": "("}}, "regular expression"),
        ({"task_type": {"$exists": "yes"}}, "true or false"),
        ({"$and": []}, "non-empty"),
        ({"task_type": {"$regex": "a", "$options": "x"}}, "$options"),
    ],
)
def test_bad_values_get_clear_errors(rows, query, message):
    with pytest.raises(QueryError, match=None) as info:
        compile_query(query, FIELDS)
    assert message in info.value.message


def test_depth_is_bounded(rows):
    query: dict = {"task_type": "alpha"}
    for _ in range(20):
        query = {"$and": [query]}
    with pytest.raises(QueryError, match="nested deeper"):
        compile_query(query, FIELDS)


def test_sql_injection_in_values_is_just_data(rows):
    assert run({"task_type": "alpha'; DROP TABLE tasks_task; --"}) == []
    assert Task.objects.count() == 4


def test_like_to_regex_escapes_regex_characters():
    assert like_to_regex("a.b%") == r"^a\.b.*$"


def test_nul_characters_are_a_query_error_not_a_database_crash(rows):
    with pytest.raises(QueryError, match="NUL"):
        compile_query({"task_type": "a\x00b"}, FIELDS)
    with pytest.raises(QueryError, match="NUL"):
        compile_query({"$or": [{"task_data.k\x00": 1}]}, FIELDS)
