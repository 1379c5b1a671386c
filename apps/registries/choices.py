"""Enumerations of the registries (names from the AIOS reference inventory §1.3, §1.9-§1.12)."""

from django.db import models


class SpecType(models.TextChoices):
    BLOCK = "block"
    VDAG = "vdag"
    CLUSTER = "cluster"
    COMPONENT = "component"
    SEARCH = "search"
    MGMT_COMMAND = "mgmtCommand"


# Which parser action's built-in schema validates a stored spec of each type.
SPEC_TYPE_ACTIONS: dict[str, tuple[str, ...]] = {
    SpecType.BLOCK: ("createBlock",),
    SpecType.VDAG: ("createvDAG",),
    SpecType.CLUSTER: ("createCluster", "addNode"),
    SpecType.COMPONENT: ("createComponent",),
    SpecType.SEARCH: ("search", "filter"),
    SpecType.MGMT_COMMAND: ("executeMgmtCommand",),
}


class SpecFormat(models.TextChoices):
    OBJECT = "object", "JSON object"
    JSON = "json", "JSON text"
    YAML = "yaml", "YAML text"


class ComponentMode(models.TextChoices):
    AIOS = "aios"
    THIRD_PARTY = "third_party"


class StorageType(models.TextChoices):
    S3 = "s3"
    OBJECT_STORE = "object-store"
    FS = "fs"
    UNKNOWN = "unknown"


class RegistryType(models.TextChoices):
    AIOS = "aios"
    EXTERNAL = "external"


class AssetSource(models.TextChoices):
    UPLOADED = "uploaded", "uploaded to the built-in store"
    EXTERNAL = "external", "registered by URL"
