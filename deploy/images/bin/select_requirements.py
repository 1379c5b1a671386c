"""Pick an image's Python requirements out of the project's pinned requirements.txt.

requirements.txt stays the one place where versions are pinned; an image either takes all
of it minus what it must not carry (`--exclude FILE`: test tooling, embedded servers) or only
the packages it names (`--include FILE`). A line of FILE is a distribution name (the pin is
taken from requirements.txt; a name absent there is an error) or `name==version` for a
dependency requirements.txt only gets transitively (pinned here so the image is
reproducible; it is an error when requirements.txt pins it differently). `#` starts a comment.

    python select_requirements.py requirements.txt --exclude control-plane.exclude > req.txt

Standard library only: it runs in the image's builder stage before anything is installed.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(==\s*([^\s;#]+))?")


class SelectionError(ValueError):
    """A selection file names something requirements.txt cannot satisfy."""


@dataclass(frozen=True)
class Requirement:
    name: str  # normalized (PEP 503)
    line: str  # the line as written, e.g. "celery[redis]==5.7.0"
    version: str | None


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_lines(text: str, *, source: str) -> list[Requirement]:
    found: list[Requirement] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("-"):
            raise SelectionError(f"{source}:{number}: options such as {line!r} are not supported")
        match = _NAME.match(line)
        if not match:
            raise SelectionError(f"{source}:{number}: cannot read {raw!r}")
        found.append(Requirement(normalize(match.group(1)), line, match.group(4)))
    return found


def select(requirements: str, *, include: str | None = None, exclude: str | None = None) -> str:
    """The selected requirement lines, one per line, in requirements.txt order."""
    pinned = parse_lines(requirements, source="requirements.txt")
    by_name = {req.name: req for req in pinned}
    if exclude is not None:
        dropped = {req.name for req in parse_lines(exclude, source="exclude")}
        unknown = sorted(dropped - set(by_name))
        if unknown:
            raise SelectionError(f"excluded but not in requirements.txt: {', '.join(unknown)}")
        chosen = [req.line for req in pinned if req.name not in dropped]
    elif include is not None:
        chosen = []
        for req in parse_lines(include, source="include"):
            base = by_name.get(req.name)
            if base is None and req.version is None:
                raise SelectionError(f"{req.name} is not pinned in requirements.txt: pin it here")
            if base is not None and req.version is not None and req.version != base.version:
                raise SelectionError(
                    f"{req.name}=={req.version} contradicts requirements.txt ({base.line})"
                )
            chosen.append(req.line if req.version is not None else base.line)
    else:
        chosen = [req.line for req in pinned]
    return "".join(f"{line}\n" for line in chosen)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("requirements", help="the project's requirements.txt")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--include", help="file naming the packages to take")
    group.add_argument("--exclude", help="file naming the packages to leave out")
    args = parser.parse_args(argv)

    def read(path: str | None) -> str | None:
        if path is None:
            return None
        with open(path, encoding="utf-8") as handle:
            return handle.read()

    try:
        out = select(
            read(args.requirements) or "", include=read(args.include), exclude=read(args.exclude)
        )
    except (SelectionError, OSError) as exc:
        sys.stderr.write(f"select_requirements: {exc}\n")
        return 1
    sys.stdout.write(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
