import pytest

from apps.core.uris import (
    ComponentURI,
    URIError,
    VersionedURI,
    build_component_uri,
    build_uri,
    parse_component_uri,
    parse_uri,
    validate_slug_id,
)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("ip_allowlist:1.0-beta", VersionedURI("ip_allowlist", "1.0", "beta")),
        ("sample-vdag:1.0-stable", VersionedURI("sample-vdag", "1.0", "stable")),
        ("pose-estimator:v0.0.1-stable", VersionedURI("pose-estimator", "v0.0.1", "stable")),
        (
            "aiosv1.policies.cluster-controller-gateway.add-node:v0.0.12-stable",
            VersionedURI(
                "aiosv1.policies.cluster-controller-gateway.add-node", "v0.0.12", "stable"
            ),
        ),
        ("spec:1-release-candidate", VersionedURI("spec", "1", "release-candidate")),
    ],
)
def test_versioned_uri_round_trips(text, expected):
    parsed = parse_uri(text)
    assert parsed == expected
    assert str(parsed) == text
    assert build_uri(parsed.name, parsed.version, parsed.tag) == text


@pytest.mark.parametrize(
    "text,reason",
    [
        ("", "non-empty"),
        ("no-version", "expected 'name:version-tag'"),
        ("name:1.0", "missing tag"),
        (":1.0-beta", "expected"),
        ("name:-beta", "missing tag"),
        ("na me:1.0-beta", "invalid name"),
        ("name:1.0-be ta", "invalid tag"),
        ("name:1/0-beta", "invalid version"),
    ],
)
def test_versioned_uri_rejects_bad_shapes_with_a_reason(text, reason):
    with pytest.raises(URIError, match=reason):
        parse_uri(text)


def test_component_uri_round_trip():
    text = "model.object-detector:2.0.0-stable"
    parsed = parse_component_uri(text)
    assert parsed == ComponentURI("model", "object-detector", "2.0.0", "stable")
    assert str(parsed) == text
    assert build_component_uri("model", "object-detector", "2.0.0", "stable") == text


def test_component_uri_needs_a_type():
    with pytest.raises(URIError, match=r"componentType\.name"):
        parse_component_uri("detector:1.0-stable")


def test_build_rejects_colon_in_name():
    with pytest.raises(URIError):
        build_uri("a:b", "1", "x")


@pytest.mark.parametrize("good", ["a", "cluster-1", "x" * 63, "0abc9"])
def test_slug_ids_accept_kubernetes_names(good):
    assert validate_slug_id(good) == good


@pytest.mark.parametrize("bad", ["", "A", "-a", "a-", "a_b", "x" * 64, "a.b"])
def test_slug_ids_reject_non_kubernetes_names(bad):
    with pytest.raises(URIError):
        validate_slug_id(bad)
