"""The contract between the Parser and the services behind each action.

The parser validates a spec, then calls one handler per action with an
:class:`ActionRequest`; the handler returns an :class:`ActionResult` (status + JSON body).
Handlers live in the app that owns the work (``apps.clusters.parser_actions`` …), so the
parser knows nothing of clusters or blocks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ActionRequest:
    action: str
    values: dict[str, Any]  # the validated spec values (body.spec.values, or body.values)
    header: dict[str, Any] = field(default_factory=dict)
    user: Any = None  # the authenticated Django user
    raw: dict[str, Any] = field(default_factory=dict)  # the whole envelope as received


@dataclass
class ActionResult:
    status: int
    body: dict[str, Any]
