"""Built-in policies shipped with AIOS, one folder per policy (``<name>/code/function.py``).

Each folder is an ordinary policy archive source: ``manage.py aios_seed_policies`` packages it
and registers it as the record ``aios.<name>:1.0-stable``. The code is plain Python that takes
and returns JSON, so it runs the same in-process, in the sandbox, on an executor or as a function.
"""

from __future__ import annotations

from pathlib import Path

BUILTIN_POLICIES_DIR = Path(__file__).resolve().parent
BUILTIN_URI_PREFIX = "aios."
BUILTIN_VERSION = "1.0"
BUILTIN_RELEASE_TAG = "stable"


def builtin_policy_folders() -> dict[str, Path]:
    """``{name: folder}`` of every built-in policy (a folder holding ``code/function.py``)."""
    return {
        path.name: path
        for path in sorted(BUILTIN_POLICIES_DIR.iterdir())
        if path.is_dir() and (path / "code" / "function.py").is_file()
    }


def builtin_policy_uri(name: str) -> str:
    """The registry URI of a built-in: ``aios.<name>:1.0-stable``."""
    return f"{BUILTIN_URI_PREFIX}{name}:{BUILTIN_VERSION}-{BUILTIN_RELEASE_TAG}"
