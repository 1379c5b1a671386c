"""Keep the adhoc servers' executor map in step with blocks as they start and go."""

from __future__ import annotations

from typing import Any


def block_saved(sender: Any, instance: Any, **kwargs: Any) -> None:
    from apps.inference import services

    services.on_block_saved(instance)


def block_status_changed(sender: Any, block: Any, **kwargs: Any) -> None:
    from apps.inference import services

    services.on_block_saved(block)


def block_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    from apps.inference import services

    services.on_block_deleted(instance.pk)


def connect() -> None:
    from django.db.models.signals import post_delete, post_save

    try:
        from apps.blocks.models import Block
    except ImportError:  # pragma: no cover - the blocks app is always installed
        return
    post_save.connect(block_saved, sender=Block, dispatch_uid="aios.inference.block_saved")
    post_delete.connect(block_deleted, sender=Block, dispatch_uid="aios.inference.block_deleted")
    from apps.blocks.signals import block_status_changed as status_signal

    status_signal.connect(
        block_status_changed, sender=Block, dispatch_uid="aios.inference.block_status_changed"
    )
