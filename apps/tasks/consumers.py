"""Websocket ``/ws/tasks/<id>/``: the task's current state, then every update live."""

from __future__ import annotations

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from apps.tasks import services
from apps.tasks.models import Task

CLOSE_UNAUTHENTICATED = 4401
CLOSE_NOT_FOUND = 4404


class TaskProgressConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        task_id = self.scope["url_route"]["kwargs"]["task_id"]
        task = await self._visible_task(user, task_id)
        if task is None:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        self.group = services.group_name(task.task_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self.send_json({"type": "task.snapshot", "task": services.snapshot(task)})

    async def disconnect(self, code: int) -> None:
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def task_update(self, event: dict) -> None:
        await self.send_json({"type": "task.update", "task": event["task"]})

    @database_sync_to_async
    def _visible_task(self, user, task_id) -> Task | None:
        task = Task.objects.filter(pk=task_id).first()
        if task is None:
            return None
        if user.is_staff or task.owner_id in (None, user.pk):
            return task
        return None
