"""Signals other apps listen to. ``set_status`` updates rows with ``.update()`` (no
``post_save``), so status changes are announced here."""

from django.dispatch import Signal

# Sent with ``block`` (the Block, its new status set) after every status change.
block_status_changed = Signal()
