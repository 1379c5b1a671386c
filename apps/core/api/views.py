"""Small core endpoints: liveness of the control plane and its backing servers."""

from __future__ import annotations

import redis
from django.conf import settings
from django.db import connection
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView


class HealthView(APIView):
    permission_classes = [AllowAny]
    authentication_classes: list = []

    @extend_schema(
        responses=inline_serializer(
            name="Health",
            fields={
                "status": serializers.CharField(),
                "database": serializers.CharField(),
                "redis": serializers.CharField(),
            },
        )
    )
    def get(self, request):
        result = {"status": "ok", "database": "ok", "redis": "ok"}
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        except Exception as exc:  # report, never 500: this is the probe
            result.update(status="degraded", database=f"error: {type(exc).__name__}")
        try:
            redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2).ping()
        except Exception as exc:
            result.update(status="degraded", redis=f"error: {type(exc).__name__}")
        return Response(result, status=200 if result["status"] == "ok" else 503)
