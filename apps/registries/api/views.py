"""REST surface of the registries: thin viewsets over :mod:`apps.registries.services`.

Versioned records (specs, templates, components, assets) are addressed by their URI in
the path (``/api/v1/components/model.echo:1.0.0-stable/``), so lookups accept ``:``,
``.`` and ``-``; the others by their uuid.
"""

from __future__ import annotations

import json
import logging
import uuid

from django.http import FileResponse, HttpResponseRedirect
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from apps.core.api.mixins import OwnedQuerysetMixin, QueryMixin
from apps.core.errors import NotFound, ValidationFailed
from apps.core.permissions import IsOwnerOrStaffForWrites
from apps.core.uris import URIError, parse_uri
from apps.parser.validation import reject_nul
from apps.registries import filtersets, queries, services
from apps.registries.api import serializers as s
from apps.registries.choices import AssetSource
from apps.registries.models import (
    Asset,
    AssetRegistry,
    Component,
    ContainerRegistry,
    InferenceServer,
    Spec,
    Template,
)
from apps.registries.services.common import lookup_value

log = logging.getLogger("aios.registries")

URI_LOOKUP = r"[^/]+"


class NulSafeMixin:
    """PostgreSQL refuses NUL characters in text parameters: a query body holding one is
    a 400 and a path holding one names nothing (404), instead of a database error."""

    def initial(self, request: Request, *args, **kwargs) -> None:
        super().initial(request, *args, **kwargs)
        if getattr(self, "action", None) == "query":
            reject_nul(request.data, [], "the query")

    def get_object(self):
        lookup = self.kwargs.get(self.lookup_url_kwarg or self.lookup_field)
        if lookup_value(lookup) is None:
            raise NotFound(f"no {self.basename.replace('-', ' ')} {lookup!r}")
        return super().get_object()


class RegistryViewSet(NulSafeMixin, OwnedQuerysetMixin, QueryMixin, viewsets.ModelViewSet):
    """CRUD + ``query/``; reads are open, writes need a user, changes need the owner."""

    permission_classes = [IsOwnerOrStaffForWrites]


class UUIDLookupMixin:
    """A malformed uuid in the path is a 404 like any unknown id (not a 400 or a 500)."""

    def get_object(self):
        value = self.kwargs.get(self.lookup_url_kwarg)
        try:
            uuid.UUID(str(value))
        except ValueError:
            raise NotFound(f"no {self.basename.replace('-', ' ')} with id {value!r}") from None
        return super().get_object()


# -- spec store ---------------------------------------------------------------------------


@extend_schema_view(
    list=extend_schema(summary="List specs"),
    create=extend_schema(summary="Store a spec (validated against its action's schema)"),
)
class SpecViewSet(RegistryViewSet):
    queryset = Spec.objects.select_related("owner")
    serializer_class = s.SpecSerializer
    filterset_class = filtersets.SpecFilterSet
    query_fields = queries.SPEC_FIELDS
    lookup_field = "spec_uri"
    lookup_url_kwarg = "uri"
    lookup_value_regex = URI_LOOKUP


# -- template store -----------------------------------------------------------------------


class TemplateViewSet(RegistryViewSet):
    queryset = Template.objects.select_related("owner")
    serializer_class = s.TemplateSerializer
    filterset_class = filtersets.TemplateFilterSet
    query_fields = queries.TEMPLATE_FIELDS
    lookup_field = "template_uri"
    lookup_url_kwarg = "uri"
    lookup_value_regex = URI_LOOKUP

    @extend_schema(
        summary="Run the template's policy (sandboxed) on input_data",
        request=s.TemplateExecuteSerializer,
        responses={
            200: s.TemplateExecuteResultSerializer,
            422: OpenApiResponse(description="the policy failed"),
        },
    )
    @action(detail=True, methods=["post"], permission_classes=[IsAuthenticated])
    def execute(self, request: Request, uri: str | None = None) -> Response:
        template = self.get_object()
        body = s.TemplateExecuteSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        result = services.execute_template(
            template, body.validated_data["input_data"], body.validated_data["parameters"]
        )
        return Response({"result": result})


# -- component registry -------------------------------------------------------------------


class ComponentViewSet(RegistryViewSet):
    """Components are written with the component spec (the parser's ``createComponent``
    values); the URI ``componentType.name:version-releaseTag`` is generated."""

    queryset = Component.objects.select_related("owner")
    serializer_class = s.ComponentSerializer
    filterset_class = filtersets.ComponentFilterSet
    query_fields = queries.COMPONENT_FIELDS
    lookup_field = "component_uri"
    lookup_url_kwarg = "uri"
    lookup_value_regex = URI_LOOKUP
    parser_classes = [JSONParser]

    @extend_schema(
        summary="Register a component",
        responses={201: s.ComponentSerializer, 409: OpenApiResponse(description="URI exists")},
    )
    def create(self, request: Request, *args, **kwargs) -> Response:
        component = services.register_component(request.data, owner=request.user)
        return Response(s.ComponentSerializer(component).data, status=status.HTTP_201_CREATED)

    def update(self, request: Request, *args, **kwargs) -> Response:
        component = self.get_object()
        component = services.update_component(
            component, request.data, partial=kwargs.get("partial", False)
        )
        return Response(s.ComponentSerializer(component).data)

    def perform_destroy(self, instance: Component) -> None:
        services.unregister_component(instance)


# -- container registries -----------------------------------------------------------------


class ContainerRegistryViewSet(UUIDLookupMixin, RegistryViewSet):
    queryset = ContainerRegistry.objects.select_related("owner")
    serializer_class = s.ContainerRegistrySerializer
    filterset_class = filtersets.ContainerRegistryFilterSet
    query_fields = queries.CONTAINER_REGISTRY_FIELDS
    lookup_url_kwarg = "container_registry_id"

    @extend_schema(
        summary="Check the public URL answers (real HTTP GET, short timeout)",
        responses=s.UrlHealthSerializer,
    )
    @action(detail=True, methods=["get"], permission_classes=[IsAuthenticated])
    def health(self, request: Request, container_registry_id: str | None = None) -> Response:
        registry = self.get_object()
        return Response(services.check_url_health(registry.public_url))


# -- asset registries and the built-in asset store ----------------------------------------


class AssetRegistryViewSet(UUIDLookupMixin, RegistryViewSet):
    queryset = AssetRegistry.objects.select_related("owner")
    serializer_class = s.AssetRegistrySerializer
    filterset_class = filtersets.AssetRegistryFilterSet
    query_fields = queries.ASSET_REGISTRY_FIELDS
    lookup_url_kwarg = "asset_registry_id"

    @extend_schema(
        summary="Check the asset DB's public URL answers", responses=s.UrlHealthSerializer
    )
    @action(detail=True, methods=["get"], permission_classes=[IsAuthenticated])
    def health(self, request: Request, asset_registry_id: str | None = None) -> Response:
        registry = self.get_object()
        return Response(services.check_url_health(registry.public_url))


class FileRenderer(BaseRenderer):
    """Lets a download negotiate any Accept header; errors still render as JSON."""

    media_type = "*/*"
    format = "file"
    charset = None

    def render(self, data, accepted_media_type=None, renderer_context=None) -> bytes:
        return json.dumps(data).encode() if data is not None else b""


UPLOAD_REQUEST = {"multipart/form-data": s.AssetUploadSerializer}


@extend_schema_view(
    create=extend_schema(
        summary="Upload a file (multipart) or register an external URL (JSON)",
        request={
            "multipart/form-data": s.AssetUploadSerializer,
            "application/json": s.AssetExternalSerializer,
        },
        responses={
            201: s.AssetSerializer,
            409: OpenApiResponse(description="URI exists"),
            413: OpenApiResponse(description="file over the upload limit"),
        },
    ),
)
class AssetViewSet(RegistryViewSet):
    queryset = Asset.objects.select_related("owner", "assets_db")
    serializer_class = s.AssetSerializer
    filterset_class = filtersets.AssetFilterSet
    query_fields = queries.ASSET_FIELDS
    lookup_field = "asset_uri"
    lookup_url_kwarg = "uri"
    lookup_value_regex = URI_LOOKUP
    parser_classes = [JSONParser, MultiPartParser, FormParser]

    def create(self, request: Request, *args, **kwargs) -> Response:
        services.assets.check_declared_size(request.META.get("CONTENT_LENGTH"))
        if request.content_type.startswith(("multipart/", "application/x-www-form-urlencoded")):
            asset = self._upload(request)
        else:
            body = s.AssetExternalSerializer(data=request.data)
            body.is_valid(raise_exception=True)
            data = body.validated_data
            asset = services.register_external_asset(
                name=data["asset_name"],
                version=data["asset_version"]["version"],
                tag=data["asset_version"]["tag"],
                url=data["asset_public_url"],
                metadata=data.get("asset_metadata"),
                tags=data.get("asset_tags"),
                assets_db_id=data.get("assets_db_id"),
                sha256=data.get("sha256", ""),
                size=data.get("size"),
                content_type=data.get("content_type", ""),
                owner=request.user,
            )
        return Response(s.AssetSerializer(asset).data, status=status.HTTP_201_CREATED)

    def _upload(self, request: Request) -> Asset:
        body = s.AssetUploadSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        if data.get("asset_uri"):
            try:
                parsed = parse_uri(data["asset_uri"], kind="asset")
            except URIError as exc:
                raise ValidationFailed(str(exc), details=[{"field": "asset_uri"}]) from None
            name, version, tag = parsed.name, parsed.version, parsed.tag
        else:
            missing = [k for k in ("asset_name", "asset_version", "asset_tag") if not data.get(k)]
            if missing:
                raise ValidationFailed(
                    "give asset_uri, or asset_name, asset_version and asset_tag",
                    details=[{"field": k, "message": "required"} for k in missing],
                )
            name, version, tag = data["asset_name"], data["asset_version"], data["asset_tag"]
        metadata = data.get("asset_metadata") or {}
        if not isinstance(metadata, dict):
            raise ValidationFailed(
                "asset_metadata must be a JSON object",
                details=[{"field": "asset_metadata", "message": "expected a JSON object"}],
            )
        return services.store_asset(
            data["asset"],
            name=name,
            version=version,
            tag=tag,
            metadata=metadata,
            tags=data.get("asset_tags"),
            owner=request.user,
        )

    @extend_schema(
        summary="Upload a file into the built-in store (multipart: asset=@file)",
        request=UPLOAD_REQUEST,
        responses={201: s.AssetSerializer, 413: OpenApiResponse(description="too large")},
    )
    @action(
        detail=False,
        methods=["post"],
        url_path="upload",
        parser_classes=[MultiPartParser, FormParser],
    )
    def upload(self, request: Request) -> Response:
        services.assets.check_declared_size(request.META.get("CONTENT_LENGTH"))
        asset = self._upload(request)
        return Response(s.AssetSerializer(asset).data, status=status.HTTP_201_CREATED)

    def update(self, request: Request, *args, **kwargs) -> Response:
        # Only metadata and tags change: the content of a version is immutable.
        kwargs["partial"] = True
        return super().update(request, *args, **kwargs)

    def perform_destroy(self, instance: Asset) -> None:
        services.delete_asset(instance)

    @extend_schema(
        summary="Download the file (external assets redirect to their URL)",
        responses={
            (200, "application/octet-stream"): OpenApiTypes.BINARY,
            302: OpenApiResponse(description="external asset: redirect to its URL"),
        },
    )
    @action(detail=True, methods=["get"], renderer_classes=[FileRenderer, JSONRenderer])
    def download(self, request: Request, uri: str | None = None):
        asset = self.get_object()
        if asset.source == AssetSource.EXTERNAL:
            return HttpResponseRedirect(asset.external_url)
        handle = services.open_asset(asset)
        response = FileResponse(
            handle,
            as_attachment=True,
            filename=asset.filename or asset.name,
            content_type=asset.content_type or "application/octet-stream",
        )
        response["ETag"] = f'"{asset.sha256}"'
        response["X-Checksum-Sha256"] = asset.sha256
        return response

    @extend_schema(
        summary="Every version of this asset's name", responses=s.AssetSerializer(many=True)
    )
    @action(detail=True, methods=["get"])
    def versions(self, request: Request, uri: str | None = None) -> Response:
        asset = self.get_object()
        queryset = services.versions_of(asset.name).select_related("owner")
        page = self.paginate_queryset(queryset)
        if page is not None:
            return self.get_paginated_response(s.AssetSerializer(page, many=True).data)
        return Response(s.AssetSerializer(queryset, many=True).data)


# -- inference servers --------------------------------------------------------------------


class InferenceServerViewSet(UUIDLookupMixin, RegistryViewSet):
    queryset = InferenceServer.objects.select_related("owner")
    serializer_class = s.InferenceServerSerializer
    filterset_class = filtersets.InferenceServerFilterSet
    query_fields = queries.INFERENCE_SERVER_FIELDS
    lookup_url_kwarg = "inference_server_id"
