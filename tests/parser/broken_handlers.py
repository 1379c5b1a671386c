"""A handler module whose own import is broken: that must be a 500, never a 501."""

import aios_module_that_does_not_exist  # noqa: F401


def handler(request):  # pragma: no cover - never importable
    return None
