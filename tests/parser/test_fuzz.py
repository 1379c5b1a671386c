"""Property-based: random JSON into every parser action and every ``query/`` endpoint
never produces a 500 (bad input is always a 4xx in the one error shape)."""

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from apps.parser.actions import ACTION_HANDLERS, ACTIONS  # noqa: E402

FIELD_NAMES = [
    "componentId",
    "componentType",
    "name",
    "version",
    "releaseTag",
    "containerRegistryInfo",
    "componentMode",
    "containerImageMetadata",
    "entrypoint",
    "policies",
    "tags",
    "blockId",
    "clusterId",
    "minInstances",
    "maxInstances",
    "nodes",
    "graph",
    "nodeLabel",
    "inputs",
    "matchType",
    "filter",
    "componentQuery",
    "clusterQuery",
    "rankingPolicyRule",
    "policyRuleURI",
    "parameters",
    "filterRule",
    "limit",
    "service",
    "mgmtCommand",
    "id",
    "variable",
    "operator",
    "value",
    "logicalOperator",
    "conditions",
    "$and",
    "$or",
    "$in",
    "$regex",
    "$gt",
    "$exists",
    "$not",
    "$options",
    "specType",
    "componentMetadata.a",
    "asset_metadata.x",
    "spec",
    "body",
    "header",
    "values",
    "templateUri",
]
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(["==", "IN", "LIKE", "AND", "Parser/V1", "aios", "model", "component", "%a_"])
)
KEYS = st.sampled_from(FIELD_NAMES) | st.text(max_size=12)
JSON = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=5),
    max_leaves=25,
)
ENVELOPES = st.fixed_dictionaries(
    {
        "header": st.fixed_dictionaries(
            {"templateUri": st.sampled_from(["Parser/V1", "Parser/V1", "missing:1-x"])},
            optional={"parameters": JSON},
        ),
        "body": st.one_of(
            st.fixed_dictionaries({"spec": st.fixed_dictionaries({"values": JSON})}),
            st.fixed_dictionaries({"values": JSON}),
            JSON,
        ),
    }
)
PAYLOADS = st.one_of(JSON, ENVELOPES)

QUERY_ENDPOINTS = [
    "/api/v1/specs/query/",
    "/api/v1/templates/query/",
    "/api/v1/components/query/",
    "/api/v1/container-registries/query/",
    "/api/v1/asset-registries/query/",
    "/api/v1/assets/query/",
    "/api/v1/inference-servers/query/",
    "/api/v1/parser-tasks/query/",
]
SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def assert_not_500(response):
    assert response.status_code < 500 or response.status_code == 501, response.content[:500]
    if response.status_code >= 400:
        assert set(response.json()) == {"error"}


@pytest.fixture
def handlers(settings):
    # Only this area's handlers run for real; other apps' handlers are not under test here.
    mine = {"createComponent", "search", "filter"}
    settings.AIOS_PARSER_HANDLERS = {
        key: ("tests.parser.handlers.echo" if key.split(".")[0] not in mine else path)
        for key, path in ACTION_HANDLERS.items()
    }


@pytest.mark.django_db
@pytest.mark.parametrize("action", ACTIONS)
def test_random_json_to_parser_actions_never_500(api, handlers, action):
    @SETTINGS
    @given(payload=PAYLOADS)
    def run(payload):
        assert_not_500(api.post(f"/api/{action}", payload, format="json"))

    run()


@pytest.mark.django_db
@pytest.mark.parametrize("url", [*QUERY_ENDPOINTS, "/api/v1/search/"])
def test_random_json_to_query_endpoints_never_500(api, url):
    @SETTINGS
    @given(query=JSON, wrap=st.booleans())
    def run(query, wrap):
        body = {"query": query} if wrap and "search" not in url else query
        assert_not_500(api.post(url, body, format="json"))

    run()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url,key",
    [
        ("/api/v1/specs/", "specData"),
        ("/api/v1/templates/", "templateData"),
        ("/api/v1/components/", "componentMetadata"),
        ("/api/v1/container-registries/", "container_registry_metadata"),
        ("/api/v1/inference-servers/", "inference_server_metadata"),
    ],
)
def test_random_json_to_registry_writes_never_500(api, url, key):
    @SETTINGS
    @given(body=JSON, value=JSON)
    def run(body, value):
        assert_not_500(api.post(url, body, format="json"))
        if isinstance(body, dict):
            assert_not_500(api.post(url, {**body, key: value}, format="json"))

    run()
