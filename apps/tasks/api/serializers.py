from rest_framework import serializers

from apps.tasks.models import Task


class TaskSerializer(serializers.ModelSerializer):
    owner = serializers.SlugRelatedField(slug_field="username", read_only=True)
    status_url = serializers.SerializerMethodField()
    websocket_url = serializers.SerializerMethodField()

    class Meta:
        model = Task
        fields = [
            "task_id",
            "task_type",
            "task_status",
            "task_data",
            "task_status_data",
            "progress",
            "progress_message",
            "error",
            "attempts",
            "owner",
            "created_at",
            "updated_at",
            "started_at",
            "finished_at",
            "status_url",
            "websocket_url",
        ]
        read_only_fields = fields

    def get_status_url(self, task: Task) -> str:
        return f"/api/v1/tasks/{task.task_id}/"

    def get_websocket_url(self, task: Task) -> str:
        return f"/ws/tasks/{task.task_id}/"
