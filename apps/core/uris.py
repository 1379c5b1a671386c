"""One parser/builder for every versioned URI of AIOS (DESIGN.md §4).

Shapes:
- policy rule, vDAG, spec, template, asset, policy graph: ``name:version-tag``
  (``ip_allowlist:1.0-beta``, ``sample-vdag:1.0-stable``);
- component: ``componentType.name:version-releaseTag`` (``model.object-detector:2.0.0-stable``).

The version holds no ``-``; everything after the first ``-`` of the part after the last
``:`` is the tag, so tags such as ``release-candidate`` survive a round trip.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-/]{0,199}$")
VERSION_RE = re.compile(r"^[A-Za-z0-9_.+]{1,64}$")
TAG_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
COMPONENT_TYPE_RE = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
SLUG_ID_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
SLUG_ID_MAX = 63

URI_KINDS = ("policy", "vdag", "spec", "template", "asset", "graph", "component")


class URIError(ValueError):
    """A URI or id that does not have the required shape; the message says what is wrong."""


@dataclass(frozen=True)
class VersionedURI:
    name: str
    version: str
    tag: str

    def __str__(self) -> str:
        return build_uri(self.name, self.version, self.tag)


@dataclass(frozen=True)
class ComponentURI:
    component_type: str
    name: str
    version: str
    release_tag: str

    def __str__(self) -> str:
        return build_component_uri(self.component_type, self.name, self.version, self.release_tag)


def _check(value: str, pattern: re.Pattern, what: str) -> str:
    if not isinstance(value, str) or not pattern.match(value):
        raise URIError(f"invalid {what} {value!r}: must match {pattern.pattern}")
    return value


def build_uri(name: str, version: str, tag: str) -> str:
    _check(name, NAME_RE, "name")
    _check(version, VERSION_RE, "version")
    _check(tag, TAG_RE, "tag")
    if ":" in name:
        raise URIError(f"invalid name {name!r}: ':' separates the name from the version")
    return f"{name}:{version}-{tag}"


def parse_uri(text: str, kind: str = "policy") -> VersionedURI:
    """Parse ``name:version-tag``; ``kind`` only names the URI in error messages."""
    if not isinstance(text, str) or not text:
        raise URIError(f"{kind} URI must be a non-empty string")
    name, sep, rest = text.rpartition(":")
    if not sep or not name:
        raise URIError(f"invalid {kind} URI {text!r}: expected 'name:version-tag'")
    version, dash, tag = rest.partition("-")
    if not dash or not version or not tag:
        raise URIError(f"invalid {kind} URI {text!r}: expected 'name:version-tag' (missing tag)")
    try:
        return VersionedURI(
            _check(name, NAME_RE, "name"),
            _check(version, VERSION_RE, "version"),
            _check(tag, TAG_RE, "tag"),
        )
    except URIError as exc:
        raise URIError(f"invalid {kind} URI {text!r}: {exc}") from None


def build_component_uri(component_type: str, name: str, version: str, release_tag: str) -> str:
    _check(component_type, COMPONENT_TYPE_RE, "componentType")
    return build_uri(f"{component_type}.{name}", version, release_tag)


def parse_component_uri(text: str) -> ComponentURI:
    base = parse_uri(text, kind="component")
    component_type, dot, name = base.name.partition(".")
    if not dot or not name:
        raise URIError(
            f"invalid component URI {text!r}: expected 'componentType.name:version-releaseTag'"
        )
    _check(component_type, COMPONENT_TYPE_RE, "componentType")
    return ComponentURI(component_type, name, base.version, base.tag)


def validate_slug_id(value: str, what: str = "id") -> str:
    """Block and cluster ids double as Kubernetes names."""
    if not isinstance(value, str) or len(value) > SLUG_ID_MAX or not SLUG_ID_RE.match(value):
        raise URIError(
            f"invalid {what} {value!r}: lowercase letters, digits and '-', "
            f"starting and ending with a letter or digit, at most {SLUG_ID_MAX} characters"
        )
    return value
