"""REST shapes of the registries, with the AIOS keys (camelCase for specs, templates and
components; the AIOS snake_case names for container registries, assets and inference
servers) mapped onto the model columns."""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.parser.validation import find_nul
from apps.registries import services
from apps.registries.choices import RegistryType, SpecType, StorageType
from apps.registries.models import (
    Asset,
    AssetRegistry,
    Component,
    ContainerRegistry,
    InferenceServer,
    Spec,
    Template,
)
from apps.registries.services.common import normalize_tags


@extend_schema_field({"type": "array", "items": {"type": "string"}})
class TagsField(serializers.Field):
    """A list of strings; a comma-separated string is accepted on input."""

    default_error_messages = {"invalid": "expected a list of strings or a comma-separated string"}

    def to_internal_value(self, data: Any) -> list[str]:
        try:
            return normalize_tags(data, self.field_name)
        except Exception:
            self.fail("invalid")
        return []  # pragma: no cover

    def to_representation(self, value: Any) -> list[str]:
        return list(value or [])


class StoredJSONField(serializers.JSONField):
    """JSON that is stored: PostgreSQL cannot keep NUL characters, so they are a 400."""

    default_error_messages = {"nul": "NUL characters (\\u0000) are not accepted"}

    def to_internal_value(self, data: Any) -> Any:
        value = super().to_internal_value(data)
        if find_nul(value) is not None:
            self.fail("nul")
        return value


@extend_schema_field(OpenApiTypes.OBJECT)
class JSONObjectField(StoredJSONField):
    """A JSON field that must hold an object."""

    default_error_messages = {"not_object": "expected a JSON object"}

    def to_internal_value(self, data: Any) -> dict:
        value = super().to_internal_value(data)
        if not isinstance(value, dict):
            self.fail("not_object")
        return value


class OwnerField(serializers.CharField):
    def __init__(self, **kwargs: Any):
        super().__init__(source="owner.username", read_only=True, allow_null=True, **kwargs)


# -- spec store ---------------------------------------------------------------------------


class SpecVersionSerializer(serializers.Serializer):
    version = serializers.CharField(max_length=64)
    tag = serializers.CharField(max_length=64)


class SpecSerializer(serializers.ModelSerializer):
    specUri = serializers.CharField(source="spec_uri", read_only=True)
    specType = serializers.ChoiceField(source="spec_type", choices=SpecType.choices)
    specName = serializers.CharField(source="name", max_length=200)
    specVersion = SpecVersionSerializer(source="*")
    specDescription = serializers.CharField(
        source="description", required=False, allow_blank=True, max_length=10000
    )
    specMetadata = JSONObjectField(source="metadata", required=False)
    specTags = TagsField(source="tags", required=False)
    specData = StoredJSONField(
        source="spec_data",
        help_text="A JSON object, or a string holding JSON or YAML: a full envelope "
        "({header, body}) or only the spec values. Validated against the built-in schema "
        "of the spec type's action.",
    )
    specFormat = serializers.CharField(source="spec_format", read_only=True)
    owner = OwnerField()
    createdAt = serializers.DateTimeField(source="created_at", read_only=True)
    updatedAt = serializers.DateTimeField(source="updated_at", read_only=True)

    class Meta:
        model = Spec
        fields = [
            "specUri",
            "specType",
            "specName",
            "specVersion",
            "specDescription",
            "specMetadata",
            "specTags",
            "specData",
            "specFormat",
            "owner",
            "createdAt",
            "updatedAt",
        ]

    def create(self, validated_data: dict) -> Spec:
        return services.create_spec(**validated_data)

    def update(self, instance: Spec, validated_data: dict) -> Spec:
        validated_data.pop("owner", None)
        return services.update_spec(instance, **validated_data)


# -- template store -----------------------------------------------------------------------


class TemplateVersionSerializer(serializers.Serializer):
    templateVersion = serializers.CharField(source="version", max_length=64)
    tag = serializers.CharField(max_length=64)


class TemplateSerializer(serializers.ModelSerializer):
    templateUri = serializers.CharField(source="template_uri", read_only=True)
    templatePolicyRuleUri = serializers.CharField(source="template_policy_rule_uri", max_length=300)
    templateName = serializers.CharField(source="name", max_length=200)
    templateVersion = TemplateVersionSerializer(source="*")
    templateDescription = serializers.CharField(
        source="description", required=False, allow_blank=True, max_length=10000
    )
    templateMetadata = JSONObjectField(source="metadata", required=False)
    templateTags = TagsField(source="tags", required=False)
    templateData = StoredJSONField(
        source="template_data",
        required=False,
        help_text="A JSON-schema-like description of the custom spec (object or string).",
    )
    owner = OwnerField()
    createdAt = serializers.DateTimeField(source="created_at", read_only=True)
    updatedAt = serializers.DateTimeField(source="updated_at", read_only=True)

    class Meta:
        model = Template
        fields = [
            "templateUri",
            "templatePolicyRuleUri",
            "templateName",
            "templateVersion",
            "templateDescription",
            "templateMetadata",
            "templateTags",
            "templateData",
            "owner",
            "createdAt",
            "updatedAt",
        ]

    def create(self, validated_data: dict) -> Template:
        return services.create_template(**validated_data)

    def update(self, instance: Template, validated_data: dict) -> Template:
        validated_data.pop("owner", None)
        return services.update_template(instance, **validated_data)


class TemplateExecuteSerializer(serializers.Serializer):
    input_data = serializers.JSONField(help_text="The custom spec (or any input of the policy).")
    parameters = JSONObjectField(required=False, default=dict)


class TemplateExecuteResultSerializer(serializers.Serializer):
    result = serializers.JSONField()


# -- component registry -------------------------------------------------------------------


class ComponentIdSerializer(serializers.Serializer):
    name = serializers.CharField()
    version = serializers.CharField()
    releaseTag = serializers.CharField()


class ContainerRegistryInfoSerializer(serializers.Serializer):
    containerImage = serializers.CharField(required=False)
    containerRegistryId = serializers.CharField(required=False)
    containerImageMetadata = serializers.JSONField(
        required=False,
        help_text="Image metadata; 'entrypoint' ('module.path:ClassName') is required for "
        "aios components without a containerImage (the local driver imports it).",
    )
    componentMode = serializers.ChoiceField(choices=["aios", "third_party"])
    initContainer = serializers.JSONField(required=False)


class ComponentSerializer(serializers.Serializer):
    """The component document. Writes take the component spec (validated with the
    parser's ``createComponent`` schema); reads add ``componentURI`` and timestamps."""

    componentURI = serializers.CharField(read_only=True)
    componentId = ComponentIdSerializer()
    componentType = serializers.CharField()
    containerRegistryInfo = ContainerRegistryInfoSerializer(required=False)
    componentMetadata = JSONObjectField(required=False)
    componentInitData = JSONObjectField(required=False)
    componentInputProtocol = JSONObjectField(required=False)
    componentOutputProtocol = JSONObjectField(required=False)
    policies = serializers.JSONField(required=False)
    componentManagementCommandsTemplate = JSONObjectField(required=False)
    componentInitSettings = JSONObjectField(required=False)
    componentInitParameters = JSONObjectField(required=False)
    componentParametersProtocol = JSONObjectField(required=False)
    componentInitSettingsProtocol = JSONObjectField(required=False)
    tags = TagsField(required=False)
    owner = serializers.CharField(read_only=True, allow_null=True)
    createdAt = serializers.DateTimeField(read_only=True)
    lastModifiedAt = serializers.DateTimeField(read_only=True)

    def to_representation(self, instance: Component) -> dict:
        return services.component_document(instance)


# -- container registries -----------------------------------------------------------------


class StorageInfoSerializer(serializers.Serializer):
    storage_type = serializers.ChoiceField(
        choices=StorageType.choices, required=False, default=StorageType.UNKNOWN
    )
    storage_size = serializers.IntegerField(
        required=False, default=-1, min_value=-1, help_text="MB, -1 = unlimited or unknown"
    )
    memory_size = serializers.IntegerField(
        required=False, default=-1, min_value=-1, help_text="MB, -1 = unlimited or unknown"
    )
    registry_type = serializers.ChoiceField(
        choices=RegistryType.choices, required=False, default=RegistryType.EXTERNAL
    )


@extend_schema_field(StorageInfoSerializer)
class StorageInfoField(JSONObjectField):
    def to_internal_value(self, data: Any) -> dict:
        value = super().to_internal_value(data)
        nested = StorageInfoSerializer(data=value)
        nested.is_valid(raise_exception=True)
        return {**value, **nested.validated_data}


class ContainerRegistrySerializer(serializers.ModelSerializer):
    container_registry_id = serializers.UUIDField(read_only=True)
    container_registry_name = serializers.CharField(source="name", max_length=200)
    container_registry_metadata = JSONObjectField(source="metadata", required=False)
    container_registry_tags = TagsField(source="tags", required=False)
    container_registry_public_url = serializers.URLField(source="public_url", max_length=500)
    container_registry_image_prefix = serializers.CharField(
        source="image_prefix", required=False, allow_blank=True, max_length=300
    )
    container_registry_config = JSONObjectField(source="config", required=False)
    container_registry_storage_info = StorageInfoField(source="storage_info", required=False)
    owner = OwnerField()
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)

    class Meta:
        model = ContainerRegistry
        fields = [
            "container_registry_id",
            "container_registry_name",
            "container_registry_metadata",
            "container_registry_tags",
            "container_registry_public_url",
            "container_registry_image_prefix",
            "container_registry_config",
            "container_registry_storage_info",
            "owner",
            "created_at",
            "updated_at",
        ]

    def create(self, validated_data: dict) -> ContainerRegistry:
        validated_data.setdefault("storage_info", dict(StorageInfoSerializer().run_validation({})))
        return super().create(validated_data)


class UrlHealthSerializer(serializers.Serializer):
    healthy = serializers.BooleanField()
    url = serializers.CharField()
    status_code = serializers.IntegerField(required=False)
    error = serializers.CharField(required=False)
    latency_ms = serializers.FloatField()


# -- assets -------------------------------------------------------------------------------


class AssetRegistrySerializer(serializers.ModelSerializer):
    asset_registry_id = serializers.UUIDField(read_only=True)
    asset_registry_name = serializers.CharField(source="name", max_length=200)
    asset_registry_metadata = JSONObjectField(source="metadata", required=False)
    asset_registry_tags = TagsField(source="tags", required=False)
    asset_registry_public_url = serializers.URLField(source="public_url", max_length=500)
    owner = OwnerField()
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)

    class Meta:
        model = AssetRegistry
        fields = [
            "asset_registry_id",
            "asset_registry_name",
            "asset_registry_metadata",
            "asset_registry_tags",
            "asset_registry_public_url",
            "owner",
            "created_at",
            "updated_at",
        ]


class AssetVersionSerializer(serializers.Serializer):
    version = serializers.CharField(max_length=64)
    tag = serializers.CharField(max_length=64)


class AssetFileInfoSerializer(serializers.Serializer):
    sha256 = serializers.CharField()
    size = serializers.IntegerField(allow_null=True)
    content_type = serializers.CharField()
    filename = serializers.CharField()
    source = serializers.CharField()


class AssetSerializer(serializers.ModelSerializer):
    asset_uri = serializers.CharField(read_only=True)
    asset_id = serializers.UUIDField(read_only=True)
    asset_name = serializers.CharField(source="name", read_only=True)
    asset_version = serializers.SerializerMethodField()
    assets_db_id = serializers.UUIDField(read_only=True, allow_null=True)
    asset_metadata = JSONObjectField(source="metadata", required=False)
    asset_tags = TagsField(source="tags", required=False)
    asset_public_url = serializers.SerializerMethodField()
    asset_file_info = serializers.SerializerMethodField()
    owner = OwnerField()
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)

    class Meta:
        model = Asset
        fields = [
            "asset_uri",
            "asset_id",
            "asset_name",
            "asset_version",
            "assets_db_id",
            "asset_metadata",
            "asset_tags",
            "asset_public_url",
            "asset_file_info",
            "owner",
            "created_at",
            "updated_at",
        ]

    @extend_schema_field(AssetVersionSerializer)
    def get_asset_version(self, asset: Asset) -> dict:
        return {"version": asset.version, "tag": asset.tag}

    @extend_schema_field(OpenApiTypes.URI)
    def get_asset_public_url(self, asset: Asset) -> str:
        return services.public_url(asset)

    @extend_schema_field(AssetFileInfoSerializer)
    def get_asset_file_info(self, asset: Asset) -> dict:
        return {
            "sha256": asset.sha256,
            "size": asset.size,
            "content_type": asset.content_type,
            "filename": asset.filename,
            "source": asset.source,
        }

    def update(self, instance: Asset, validated_data: dict) -> Asset:
        return services.update_asset(
            instance, metadata=validated_data.get("metadata"), tags=validated_data.get("tags")
        )


class AssetUploadSerializer(serializers.Serializer):
    """Multipart upload into the built-in store."""

    asset = serializers.FileField(help_text="The file.")
    asset_uri = serializers.CharField(
        required=False, help_text="name:version-tag (or give the three parts below)"
    )
    asset_name = serializers.CharField(required=False, max_length=200)
    asset_version = serializers.CharField(required=False, max_length=64)
    asset_tag = serializers.CharField(required=False, max_length=64)
    asset_metadata = StoredJSONField(required=False, help_text="A JSON object (as text).")
    asset_tags = TagsField(required=False)


class AssetExternalSerializer(serializers.Serializer):
    """Register an asset that lives at a URL; nothing is downloaded."""

    asset_name = serializers.CharField(max_length=200)
    asset_version = AssetVersionSerializer()
    asset_public_url = serializers.CharField(max_length=1000)
    asset_metadata = JSONObjectField(required=False)
    asset_tags = TagsField(required=False)
    assets_db_id = serializers.CharField(required=False, allow_null=True)
    sha256 = serializers.RegexField(r"^[0-9a-f]{64}$", required=False)
    size = serializers.IntegerField(required=False, min_value=0)
    content_type = serializers.CharField(required=False, max_length=200)


# -- inference servers --------------------------------------------------------------------

QUOTA_KEYS = (
    "requests_per_second_total",
    "requests_per_second_per_session",
    "requests_per_second_per_block_id",
    "requests_per_session_id",
    "requests_per_block_id",
)


class QuotaManagementDataSerializer(serializers.Serializer):
    requests_per_second_total = serializers.IntegerField(required=False, min_value=0)
    requests_per_second_per_session = serializers.IntegerField(required=False, min_value=0)
    requests_per_second_per_block_id = serializers.IntegerField(required=False, min_value=0)
    requests_per_session_id = serializers.IntegerField(required=False, min_value=0)
    requests_per_block_id = serializers.IntegerField(required=False, min_value=0)


class InferenceServerMetadataSerializer(serializers.Serializer):
    region = serializers.CharField(required=False)
    availability_zone = serializers.CharField(required=False)
    provider = serializers.CharField(required=False)
    cluster_id = serializers.CharField(required=False)
    gpu_available = serializers.BooleanField(required=False)
    quota_management_data = QuotaManagementDataSerializer(required=False)


@extend_schema_field(InferenceServerMetadataSerializer)
class InferenceServerMetadataField(JSONObjectField):
    def to_internal_value(self, data: Any) -> dict:
        value = super().to_internal_value(data)
        nested = InferenceServerMetadataSerializer(data=value)
        nested.is_valid(raise_exception=True)
        return value


class InferenceServerSerializer(serializers.ModelSerializer):
    inference_server_id = serializers.UUIDField(read_only=True)
    inference_server_name = serializers.CharField(source="name", max_length=200)
    inference_server_metadata = InferenceServerMetadataField(source="metadata", required=False)
    inference_server_tags = TagsField(source="tags", required=False)
    inference_server_public_url = serializers.CharField(
        source="public_url", max_length=500, help_text="host:port or URL of the gRPC endpoint"
    )
    owner = OwnerField()
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)

    class Meta:
        model = InferenceServer
        fields = [
            "inference_server_id",
            "inference_server_name",
            "inference_server_metadata",
            "inference_server_tags",
            "inference_server_public_url",
            "owner",
            "created_at",
            "updated_at",
        ]
