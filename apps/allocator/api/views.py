"""REST surface of the allocator: the dry-run and the reservations it holds."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.allocator import services
from apps.allocator.api.serializers import (
    AllocationDecisionSerializer,
    AllocationSerializer,
    AllocatorDryRunRequestSerializer,
)
from apps.allocator.filtersets import AllocationFilterSet
from apps.allocator.models import Allocation
from apps.core.errors import ValidationFailed


def with_component_policies(values: dict[str, Any]) -> dict[str, Any]:
    """The spec as createBlock would allocate it: when ``blockComponentURI`` names a
    registered component, its policies (and requirements) are merged in by the blocks app's
    own rules; otherwise the spec is used as given."""
    uri = values.get("blockComponentURI")
    if not isinstance(uri, str) or not uri:
        return values
    try:
        from apps.blocks import specs as block_specs
        from apps.registries.models import Component
    except ImportError:  # pragma: no cover - both apps are installed
        return values
    component = Component.objects.filter(component_uri=uri).first()
    if component is None:
        return values
    try:
        return block_specs.build(values, component).allocator_spec()
    except (TypeError, AttributeError):  # an older/newer blocks API: use the spec as is
        return values


def dry_run_from_body(data: Any) -> dict[str, Any]:
    """Run a dry-run for a createBlock body; ``instances`` and ``clusters`` are optional
    top-level keys beside the spec."""
    if not isinstance(data, dict):
        raise ValidationFailed("the body must be a JSON object (the createBlock spec)")
    data = dict(data)
    instances = data.pop("instances", None)
    clusters = data.pop("clusters", None)
    values = with_component_policies(services.spec_values(data))
    decision = services.allocate(values, dry_run=True, instances=instances, clusters=clusters)
    return decision.as_dict()


class DryRunView(APIView):
    """Where a block would go, changing nothing: 200 with the decision, 409 with the reason
    nothing fits."""

    @extend_schema(request=AllocatorDryRunRequestSerializer, responses=AllocationDecisionSerializer)
    def post(self, request: Request) -> Response:
        return Response(dry_run_from_body(request.data), status=status.HTTP_200_OK)


class AllocationViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Reservations held by placed instances. Staff may release one by hand."""

    queryset = (
        Allocation.objects.select_related("cluster", "node")
        .prefetch_related("gpu_allocations__gpu")
        .order_by("cluster_id", "node_id", "instance_id")
    )
    serializer_class = AllocationSerializer
    filterset_class = AllocationFilterSet

    def get_permissions(self):
        if self.request.method == "DELETE":
            return [IsAdminUser()]
        return super().get_permissions()

    def perform_destroy(self, instance: Allocation) -> None:
        services.release(instance.instance_id)
