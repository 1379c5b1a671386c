"""Finding and killing the process tree under a pid, from /proc (no third-party dependency).

Used by the sandbox worker after each call and by the pool when it kills a worker: a policy may
fork, and its children must not outlive the call (nor keep the worker's socket open).
"""

from __future__ import annotations

import contextlib
import os
import signal


def descendants(root: int) -> list[int]:
    """Every live process below ``root`` (children first, then theirs), from one /proc scan."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.scandir("/proc")
    except OSError:
        return []
    with entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as fh:
                    stat = fh.read()
            except OSError:  # gone meanwhile, or not ours to read
                continue
            # The command name may hold spaces and parentheses: fields resume after the last ')'.
            fields = stat[stat.rfind(b")") + 2 :].split()
            if len(fields) < 2:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: list[int] = []
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), ()):
            found.append(child)
            stack.append(child)
    return found


def kill_tree(root: int, *, include_root: bool) -> int:
    """SIGKILL every descendant of ``root`` (and ``root`` itself if asked). Returns the count."""
    victims = descendants(root)
    if include_root:
        victims.append(root)
    for pid in victims:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return len(victims)
