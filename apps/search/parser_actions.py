"""Parser handlers of ``search`` and ``filter`` (see apps/parser/actions.py)."""

from __future__ import annotations

from apps.core.actions import ActionRequest, ActionResult
from apps.search import engine


def search_action(request: ActionRequest) -> ActionResult:
    """Similarity search: filter, then the ranking policy orders/picks the candidates."""
    return ActionResult(200, engine.run_ir(request.values, ranked=True))


def filter_action(request: ActionRequest) -> ActionResult:
    """Filter search: the matching entities, no ranking."""
    return ActionResult(200, engine.run_ir(request.values, ranked=False))
