"""REST surface of the tasks DB: list/filter, retrieve, delete, retry, query."""

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response

from apps.core.api.mixins import OwnedQuerysetMixin, QueryMixin
from apps.core.permissions import IsOwnerOrStaffForWrites
from apps.core.query import QueryFields
from apps.tasks import services
from apps.tasks.api.serializers import TaskSerializer
from apps.tasks.filtersets import TaskFilterSet
from apps.tasks.models import Task


class TaskViewSet(
    OwnedQuerysetMixin,
    QueryMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Tasks are created by the operations that start them, never directly."""

    queryset = Task.objects.select_related("owner")
    serializer_class = TaskSerializer
    filterset_class = TaskFilterSet
    permission_classes = [IsAuthenticated, IsOwnerOrStaffForWrites]
    owner_scoped_reads = True
    lookup_field = "task_id"
    query_fields = QueryFields.of(
        "task_id",
        "task_type",
        "task_status",
        "progress",
        "created_at",
        "updated_at",
        json=("task_data", "task_status_data"),
    )

    @extend_schema(request=None, responses=TaskSerializer)
    @action(detail=True, methods=["post"])
    def retry(self, request, task_id=None):
        task = self.get_object()
        return Response(TaskSerializer(services.retry(task)).data, status=202)
