"""Allow-lists of the registries' query language (``POST <collection>/query/`` and the
search engine), keyed by the API's own field names; JSON columns accept dotted paths."""

from apps.core.query import QueryFields

COMMON = {"createdAt": "created_at", "updatedAt": "updated_at", "owner": "owner__username"}

SPEC_FIELDS = QueryFields(
    fields={
        "specUri": "spec_uri",
        "specType": "spec_type",
        "specName": "name",
        "specVersion.version": "version",
        "specVersion.tag": "tag",
        "specDescription": "description",
        "specFormat": "spec_format",
        **COMMON,
    },
    json_fields={"specMetadata": "metadata", "specTags": "tags", "specData": "spec_data"},
)

TEMPLATE_FIELDS = QueryFields(
    fields={
        "templateUri": "template_uri",
        "templatePolicyRuleUri": "template_policy_rule_uri",
        "templateName": "name",
        "templateVersion.templateVersion": "version",
        "templateVersion.tag": "tag",
        "templateDescription": "description",
        **COMMON,
    },
    json_fields={
        "templateMetadata": "metadata",
        "templateTags": "tags",
        "templateData": "template_data",
    },
)

COMPONENT_FIELDS = QueryFields(
    fields={
        "componentURI": "component_uri",
        "componentType": "component_type",
        "componentId.name": "name",
        "componentId.version": "version",
        "componentId.releaseTag": "release_tag",
        "createdAt": "created_at",
        "lastModifiedAt": "updated_at",
        "owner": "owner__username",
    },
    json_fields={
        "containerRegistryInfo": "container_registry_info",
        "componentMetadata": "component_metadata",
        "componentInitData": "component_init_data",
        "componentInputProtocol": "component_input_protocol",
        "componentOutputProtocol": "component_output_protocol",
        "policies": "policies",
        "componentManagementCommandsTemplate": "component_management_commands_template",
        "componentInitSettings": "component_init_settings",
        "componentInitParameters": "component_init_parameters",
        "componentParametersProtocol": "component_parameters_protocol",
        "componentInitSettingsProtocol": "component_init_settings_protocol",
        "tags": "tags",
    },
)

CONTAINER_REGISTRY_FIELDS = QueryFields(
    fields={
        "container_registry_id": "container_registry_id",
        "container_registry_name": "name",
        "container_registry_public_url": "public_url",
        "container_registry_image_prefix": "image_prefix",
        "created_at": "created_at",
        "updated_at": "updated_at",
    },
    json_fields={
        "container_registry_metadata": "metadata",
        "container_registry_tags": "tags",
        "container_registry_config": "config",
        "container_registry_storage_info": "storage_info",
    },
)

ASSET_REGISTRY_FIELDS = QueryFields(
    fields={
        "asset_registry_id": "asset_registry_id",
        "asset_registry_name": "name",
        "asset_registry_public_url": "public_url",
        "created_at": "created_at",
        "updated_at": "updated_at",
    },
    json_fields={"asset_registry_metadata": "metadata", "asset_registry_tags": "tags"},
)

ASSET_FIELDS = QueryFields(
    fields={
        "asset_uri": "asset_uri",
        "asset_id": "asset_id",
        "asset_name": "name",
        "asset_version.version": "version",
        "asset_version.tag": "tag",
        "assets_db_id": "assets_db_id",
        "asset_file_info.sha256": "sha256",
        "asset_file_info.size": "size",
        "asset_file_info.content_type": "content_type",
        "asset_file_info.source": "source",
        "created_at": "created_at",
        "updated_at": "updated_at",
    },
    json_fields={"asset_metadata": "metadata", "asset_tags": "tags"},
)

INFERENCE_SERVER_FIELDS = QueryFields(
    fields={
        "inference_server_id": "inference_server_id",
        "inference_server_name": "name",
        "inference_server_public_url": "public_url",
        "created_at": "created_at",
        "updated_at": "updated_at",
    },
    json_fields={"inference_server_metadata": "metadata", "inference_server_tags": "tags"},
)
