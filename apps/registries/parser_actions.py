"""Parser handler of ``createComponent`` / ``addComponent`` (see apps/parser/actions.py)."""

from __future__ import annotations

from apps.core.actions import ActionRequest, ActionResult
from apps.registries import services


def create_component(request: ActionRequest) -> ActionResult:
    """Register the component; 201 with its document (``componentURI`` included)."""
    component = services.register_component(request.values, owner=request.user)
    return ActionResult(201, services.component_document(component))
