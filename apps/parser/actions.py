"""The dispatch table of parser actions: action -> dotted path of its handler.

Each handler is ``handler(request: ActionRequest) -> ActionResult`` and lives in the app
that owns the work. A handler module that does not exist yet makes its action answer
501 ``not_implemented``; later parts of the system only add the module, never edit the
parser. ``settings.AIOS_PARSER_HANDLERS`` may override entries (same keys as below,
``executeMgmtCommand.blockId`` / ``executeMgmtCommand.clusterId`` for the two targets).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from django.conf import settings

from apps.core.actions import ActionRequest, ActionResult
from apps.core.errors import NotFound, NotImplementedYet

Handler = Callable[[ActionRequest], ActionResult]

ACTION_HANDLERS: dict[str, str] = {
    "createCluster": "apps.clusters.parser_actions.create_cluster",
    "addNode": "apps.clusters.parser_actions.add_node",
    "createComponent": "apps.registries.parser_actions.create_component",
    "createBlock": "apps.blocks.parser_actions.create_block",
    "createvDAG": "apps.vdags.parser_actions.create_vdag",
    "search": "apps.search.parser_actions.search_action",
    "filter": "apps.search.parser_actions.filter_action",
    # executeMgmtCommand goes to the block or the cluster side by the spec's target.
    "executeMgmtCommand.blockId": "apps.blocks.parser_actions.execute_mgmt_command",
    "executeMgmtCommand.clusterId": "apps.clusters.parser_actions.execute_mgmt_command",
}

ACTIONS: tuple[str, ...] = (
    "createCluster",
    "addNode",
    "createComponent",
    "createBlock",
    "createvDAG",
    "search",
    "filter",
    "executeMgmtCommand",
)

# Other spellings found in the AIOS docs and examples.
ALIASES: dict[str, str] = {
    "addComponent": "createComponent",
    "create_cluster": "createCluster",
    "add_node": "addNode",
    "create_component": "createComponent",
    "add_component": "createComponent",
    "create_block": "createBlock",
    "create_vdag": "createvDAG",
    "createVDAG": "createvDAG",
    "createVdag": "createvDAG",
    "execute_mgmt_command": "executeMgmtCommand",
}


def canonical_action(name: str) -> str:
    """The canonical action for a name or alias; 404 listing the actions otherwise."""
    if name in ACTIONS:
        return name
    if name in ALIASES:
        return ALIASES[name]
    raise NotFound(
        f"unknown parser action {name!r}",
        code="unknown_action",
        details=[{"action": name, "allowed": [*ACTIONS, *sorted(ALIASES)]}],
    )


def handler_key(action: str, values: Any) -> str:
    if action == "executeMgmtCommand":
        target = "clusterId" if isinstance(values, dict) and "clusterId" in values else "blockId"
        return f"{action}.{target}"
    return action


def handler_path(action: str, values: Any = None) -> str:
    key = handler_key(action, values)
    overrides = getattr(settings, "AIOS_PARSER_HANDLERS", None) or {}
    return overrides.get(key) or ACTION_HANDLERS[key]


def load_handler(action: str, values: Any = None) -> Handler:
    """Import the handler of ``action``; a handler that does not exist yet is a 501."""
    path = handler_path(action, values)
    module_path, _, function_name = path.rpartition(".")
    try:
        module = importlib.import_module(module_path)
    except ModuleNotFoundError as exc:
        # Only the handler's own module missing means "not yet"; a missing import inside
        # an existing module is a bug and must surface.
        if exc.name and (module_path == exc.name or module_path.startswith(f"{exc.name}.")):
            raise _not_implemented(action, path) from None
        raise
    handler = getattr(module, function_name, None)
    if not callable(handler):
        raise _not_implemented(action, path)
    return handler


def _not_implemented(action: str, path: str) -> NotImplementedYet:
    return NotImplementedYet(
        f"action {action!r} is not implemented yet: its handler {path} does not exist "
        "(it comes with a later part of the system)",
        details=[{"action": action, "handler": path}],
    )
