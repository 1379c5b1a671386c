"""Build a stand-in of the ``aios-runtime`` image from local files only (no registry).

Base images cannot be pulled on the machines that run these tests, so the Containerfile's
``FROM python:3.11-slim`` is out of reach. This assembles the same runtime *layout* from
what is on this machine instead: this interpreter and its standard library, the installed
distributions that ``deploy/images/runtime.packages`` names (with their dependencies),
``block_sdk``/``aios_instance``/``examples``, the image's entry point scripts, ``/bin/sh``,
and every shared library those need (found with ``ldd``), then ``podman build`` ``FROM
scratch``. It is a test fixture, not a release artifact: ``make images`` builds the real one.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "deploy" / "images"
STDLIB_SKIP = {"site-packages", "test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3"}
APP_DIRS = ("block_sdk", "aios_instance", "examples")


def _closure(names: list[str]) -> list[metadata.Distribution]:
    seen: dict[str, metadata.Distribution] = {}
    todo = [Requirement(n) for n in names]
    while todo:
        req = todo.pop()
        key = req.name.lower().replace("_", "-")
        if key in seen:
            continue
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            continue
        seen[key] = dist
        for raw in dist.requires or []:
            sub = Requirement(raw)
            envs = [{"extra": e} for e in req.extras] or [{"extra": ""}]
            if sub.marker is None or any(sub.marker.evaluate(env) for env in envs):
                todo.append(sub)
    return list(seen.values())


def runtime_requirements() -> list[str]:
    names = []
    for line in (IMAGES / "runtime.packages").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(re.split(r"[=<>~!]", line, maxsplit=1)[0])
    return names


def _copy(src: Path, dest_root: Path, dest: str | None = None) -> Path:
    target = dest_root / (dest or str(src).lstrip("/"))
    target.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, target, symlinks=False, dirs_exist_ok=True)
    else:
        shutil.copy2(src, target)
    return target


def _libraries(files: list[Path]) -> set[Path]:
    libs: set[Path] = set()
    for path in files:
        result = subprocess.run(
            ["ldd", str(path)], capture_output=True, text=True, timeout=30, check=False
        )
        for line in result.stdout.splitlines():
            match = re.search(r"(/\S+)", line.split("=>")[-1])
            if match:
                libs.add(Path(match.group(1)))
    return libs


def build_rootfs(dest: Path) -> None:
    base = Path(sys.base_prefix)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    python = base / "bin" / version
    prefix = Path("/usr/local")
    _copy(python, dest, f"usr/local/bin/{version}")
    for alias in ("python", "python3"):
        (dest / "usr/local/bin" / alias).symlink_to(version)
    elf: list[Path] = [python, Path("/bin/dash")]
    for lib in (base / "lib").glob("libpython*.so*"):
        elf.append(Path(_copy(lib, dest, f"usr/local/lib/{lib.name}")))
    stdlib = base / "lib" / version
    for entry in stdlib.iterdir():
        if entry.name in STDLIB_SKIP:
            continue
        copied = _copy(entry, dest, f"usr/local/lib/{version}/{entry.name}")
        if entry.name == "lib-dynload":
            elf.extend(copied.glob("*.so"))
    site = dest / f"usr/local/lib/{version}/site-packages"
    for dist in _closure(runtime_requirements()):
        for file in dist.files or []:
            src = Path(dist.locate_file(file))
            if not src.is_file() or ".." in Path(file).parts:
                continue
            target = site / file
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
            if target.suffix == ".so" or ".so." in target.name:
                elf.append(target)
    # Debian's interpreter looks in dist-packages, python.org builds in site-packages.
    (site.parent / "dist-packages").symlink_to("site-packages")
    for name in APP_DIRS:
        shutil.copytree(
            ROOT / name,
            dest / "app" / name,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
    _copy(IMAGES / "bin" / "aios-runtime", dest, "usr/local/bin/aios-runtime")
    check = (IMAGES / "bin" / "aios_healthcheck.py").read_text()
    health = dest / "usr/local/bin/aios-healthcheck"
    health.write_text(re.sub(r"^#!.*", f"#!{prefix}/bin/{version}", check, count=1))
    os.chmod(health, 0o755)  # noqa: S103 - an executable in the image
    _copy(Path("/bin/dash"), dest, "bin/sh")
    for lib in _libraries(elf):
        if lib.exists() and not str(lib).startswith(str(dest)):
            _copy(lib.resolve(), dest, str(lib).lstrip("/"))
    for directory in ("tmp", "var/lib/aios", "etc"):
        (dest / directory).mkdir(parents=True, exist_ok=True)
    os.chmod(dest / "tmp", 0o1777)  # noqa: S103 - sticky /tmp, as in the python image
    os.chmod(dest / "var/lib/aios", 0o777)  # noqa: S103 - the image's writable data dir
    (dest / "etc/passwd").write_text("root:x:0:0::/:/bin/sh\naios:x:10001:10001::/tmp:/bin/sh\n")


CONTAINERFILE = """FROM scratch
COPY rootfs/ /
ENV PATH=/usr/local/bin:/usr/bin:/bin PYTHONPATH=/app PYTHONUNBUFFERED=1 \\
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
USER 10001:10001
ENTRYPOINT ["aios-runtime"]
CMD ["--help"]
"""


def fingerprint() -> str:
    """Changes when the code or scripts that go into the image change."""
    digest = hashlib.sha256(sys.version.encode())
    for name in (*APP_DIRS, "deploy/images/bin", "deploy/images/runtime.packages"):
        path = ROOT / name
        files = sorted(path.rglob("*")) if path.is_dir() else [path]
        for file in files:
            if file.is_file() and "__pycache__" not in file.parts:
                digest.update(str(file.relative_to(ROOT)).encode())
                digest.update(file.read_bytes())
    return digest.hexdigest()[:12]


def build_image(podman: list[str], workdir: Path, tag: str) -> None:
    build_rootfs(workdir / "rootfs")
    (workdir / "Containerfile").write_text(CONTAINERFILE)
    result = subprocess.run(
        [*podman, "build", "-q", "-t", tag, "-f", str(workdir / "Containerfile"), str(workdir)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"podman build failed: {result.stderr[-2000:]}")
