"""vDAGs follow the blocks they route through: a removed block fails them."""

from __future__ import annotations

from typing import Any


def block_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    from apps.vdags.services.vdags import on_block_removed

    on_block_removed(instance.pk)


def connect() -> None:
    from django.db.models.signals import post_delete

    try:
        from apps.blocks.models import Block
    except ImportError:  # pragma: no cover - the blocks app is always installed
        return
    post_delete.connect(block_deleted, sender=Block, dispatch_uid="aios.vdags.block_deleted")
