"""Admin pages of every registry: search, filters, readable JSON, useful actions."""

from __future__ import annotations

import json

from django.contrib import admin, messages
from django.utils.html import format_html

from apps.registries import services
from apps.registries.models import (
    Asset,
    AssetRegistry,
    Component,
    ContainerRegistry,
    InferenceServer,
    Spec,
    Template,
)


def pretty_json(value) -> str:
    return format_html(
        '<pre style="white-space: pre-wrap; max-width: 80em">{}</pre>',
        json.dumps(value, indent=2, sort_keys=True, default=str),
    )


class JSONReadableAdmin(admin.ModelAdmin):
    """Shows each JSON column as indented text next to its editable field."""

    json_fields: tuple[str, ...] = ()

    def get_readonly_fields(self, request, obj=None):
        return (*super().get_readonly_fields(request, obj), *self._pretty_names())

    def _pretty_names(self) -> tuple[str, ...]:
        return tuple(f"{name}_pretty" for name in self.json_fields)

    def __getattr__(self, item: str):
        if item.endswith("_pretty") and item[: -len("_pretty")] in self.json_fields:
            column = item[: -len("_pretty")]

            def render(obj, _column=column):
                return pretty_json(getattr(obj, _column))

            render.short_description = f"{column.replace('_', ' ')} (formatted)"
            return render
        raise AttributeError(item)


class HealthCheckActionMixin:
    @admin.action(description="Check health of the public URL")
    def check_health(self, request, queryset):
        for registry in queryset:
            result = services.check_url_health(registry.public_url)
            level = messages.SUCCESS if result["healthy"] else messages.WARNING
            detail = result.get("status_code") or result.get("error")
            self.message_user(
                request,
                f"{registry.name}: {'healthy' if result['healthy'] else 'unhealthy'} "
                f"({detail}, {result['latency_ms']} ms)",
                level,
            )


@admin.register(Spec)
class SpecAdmin(JSONReadableAdmin):
    list_display = ("spec_uri", "spec_type", "spec_format", "owner", "updated_at")
    list_filter = ("spec_type", "spec_format", "created_at")
    search_fields = ("spec_uri", "name", "description")
    readonly_fields = ("spec_uri", "created_at", "updated_at")
    json_fields = ("spec_data", "metadata", "tags")
    actions = ["validate_specs"]

    @admin.action(description="Validate against the built-in schema")
    def validate_specs(self, request, queryset):
        for spec in queryset:
            try:
                action = services.validate_spec_data(spec.spec_type, spec.spec_data)
            except Exception as exc:
                self.message_user(request, f"{spec.spec_uri}: {exc}", messages.ERROR)
            else:
                self.message_user(request, f"{spec.spec_uri}: valid ({action})", messages.SUCCESS)


@admin.register(Template)
class TemplateAdmin(JSONReadableAdmin):
    list_display = ("template_uri", "template_policy_rule_uri", "owner", "updated_at")
    list_filter = ("created_at",)
    search_fields = ("template_uri", "name", "template_policy_rule_uri", "description")
    readonly_fields = ("template_uri", "created_at", "updated_at")
    json_fields = ("template_data", "metadata", "tags")


@admin.register(Component)
class ComponentAdmin(JSONReadableAdmin):
    list_display = ("component_uri", "component_type", "mode", "owner", "updated_at")
    list_filter = ("component_type", "created_at")
    search_fields = ("component_uri", "name", "component_type")
    readonly_fields = ("component_uri", "created_at", "updated_at")
    json_fields = (
        "container_registry_info",
        "component_metadata",
        "component_init_data",
        "component_input_protocol",
        "component_output_protocol",
        "policies",
        "component_management_commands_template",
        "component_init_settings",
        "component_init_parameters",
        "component_parameters_protocol",
        "component_init_settings_protocol",
        "tags",
    )

    @admin.display(description="mode")
    def mode(self, obj: Component) -> str:
        return obj.component_mode


@admin.register(ContainerRegistry)
class ContainerRegistryAdmin(HealthCheckActionMixin, JSONReadableAdmin):
    list_display = ("name", "public_url", "image_prefix", "owner", "updated_at")
    list_filter = ("created_at",)
    search_fields = ("name", "public_url", "image_prefix", "container_registry_id")
    readonly_fields = ("container_registry_id", "created_at", "updated_at")
    json_fields = ("metadata", "tags", "config", "storage_info")
    actions = ["check_health"]


@admin.register(AssetRegistry)
class AssetRegistryAdmin(HealthCheckActionMixin, JSONReadableAdmin):
    list_display = ("name", "public_url", "owner", "updated_at")
    list_filter = ("created_at",)
    search_fields = ("name", "public_url", "asset_registry_id")
    readonly_fields = ("asset_registry_id", "created_at", "updated_at")
    json_fields = ("metadata", "tags")
    actions = ["check_health"]


@admin.register(Asset)
class AssetAdmin(JSONReadableAdmin):
    list_display = (
        "asset_uri",
        "source",
        "size",
        "content_type",
        "short_sha",
        "owner",
        "created_at",
    )
    list_filter = ("source", "content_type", "created_at")
    search_fields = ("asset_uri", "name", "sha256", "filename", "external_url")
    readonly_fields = (
        "asset_uri",
        "asset_id",
        "source",
        "storage_name",
        "sha256",
        "size",
        "content_type",
        "filename",
        "download_link",
        "created_at",
        "updated_at",
    )
    json_fields = ("metadata", "tags")
    actions = ["delete_with_files"]

    @admin.display(description="sha256")
    def short_sha(self, obj: Asset) -> str:
        return obj.sha256[:12]

    @admin.display(description="download")
    def download_link(self, obj: Asset) -> str:
        url = services.public_url(obj)
        return format_html('<a href="{}">{}</a>', url, url) if url else "-"

    def delete_model(self, request, obj: Asset) -> None:
        services.delete_asset(obj)

    @admin.action(description="Delete selected assets and their unused files")
    def delete_with_files(self, request, queryset):
        count = 0
        for asset in list(queryset):
            services.delete_asset(asset)
            count += 1
        self.message_user(request, f"{count} asset(s) deleted", messages.SUCCESS)


@admin.register(InferenceServer)
class InferenceServerAdmin(JSONReadableAdmin):
    list_display = ("name", "public_url", "region", "cluster", "owner", "updated_at")
    list_filter = ("created_at",)
    search_fields = ("name", "public_url", "inference_server_id")
    readonly_fields = ("inference_server_id", "created_at", "updated_at")
    json_fields = ("metadata", "tags")

    @admin.display(description="region")
    def region(self, obj: InferenceServer) -> str:
        return str((obj.metadata or {}).get("region", ""))

    @admin.display(description="cluster")
    def cluster(self, obj: InferenceServer) -> str:
        return str((obj.metadata or {}).get("cluster_id", ""))
