"""The content-addressed cache: extract once, verify every load, detect tampering, install deps."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from block_sdk.policy_runtime.cache import PolicyCache
from block_sdk.policy_runtime.errors import PolicyError, PolicyErrorCode, PolicyIntegrityError
from block_sdk.policy_runtime.loader import PolicyLoader
from tests.block_sdk.policy_runtime.policy_helpers import GOOD_FUNCTION, BuiltPolicy, build_wheel

SIMPLE = """
class AIOSv1PolicyRule:
    def __init__(self, rule_id, settings, parameters):
        pass

    def eval(self, parameters, input_data, context):
        return {"original": True}
"""


def test_archive_is_stored_by_hash_and_extracted_once(
    tmp_path: Path, policy_source: Callable[..., BuiltPolicy]
) -> None:
    built = policy_source(SIMPLE)
    cache = PolicyCache(tmp_path / "cache")
    info = cache.store(built.data)
    assert info.sha256 == built.sha256
    assert cache.archive_path(built.sha256).read_bytes() == built.data

    prepared = cache.prepare(built.sha256)
    function_py = prepared.code_dir / "function.py"
    assert prepared.root_dir == tmp_path / "cache" / "code" / built.sha256
    assert function_py.is_file()
    first_inode = function_py.stat().st_ino

    # A fresh cache object (another process, in effect) verifies and reuses the same tree.
    again = PolicyCache(tmp_path / "cache").prepare(built.sha256, built.data)
    assert again.code_dir == prepared.code_dir
    assert function_py.stat().st_ino == first_inode
    assert prepared.deps_dir is None
    assert not list((tmp_path / "cache" / "tmp").iterdir())  # no staging left behind


def test_tampered_stored_archive_is_detected(
    tmp_path: Path, policy_source: Callable[..., BuiltPolicy]
) -> None:
    built = policy_source(SIMPLE)
    cache = PolicyCache(tmp_path / "cache")
    cache.store(built.data)
    path = cache.archive_path(built.sha256)
    os.chmod(path, 0o644)
    path.write_bytes(built.data[:-1] + bytes([built.data[-1] ^ 0xFF]))

    with pytest.raises(PolicyIntegrityError) as excinfo:
        PolicyCache(tmp_path / "cache").prepare(built.sha256)
    assert excinfo.value.code == PolicyErrorCode.INTEGRITY
    assert "was modified" in excinfo.value.message
    # The same cache object notices too: the file's identity changed since it was verified.
    with pytest.raises(PolicyIntegrityError):
        cache.read_archive(built.sha256)


def test_bytes_that_do_not_match_the_expected_sha_are_refused(
    tmp_path: Path, policy_source: Callable[..., BuiltPolicy]
) -> None:
    built = policy_source(SIMPLE)
    other = policy_source(SIMPLE.replace("True", "False"))
    cache = PolicyCache(tmp_path / "cache")
    with pytest.raises(PolicyIntegrityError, match="expected"):
        cache.prepare(built.sha256, other.data)
    with pytest.raises(PolicyIntegrityError):
        cache.store(other.data, expected_sha256=built.sha256)
    with pytest.raises(PolicyIntegrityError, match="not a sha256"):
        cache.prepare("../../etc", built.data)
    assert not cache.has_archive(built.sha256)


def test_tampered_extracted_code_is_detected_and_restored(
    tmp_path: Path, policy_source: Callable[..., BuiltPolicy], caplog: pytest.LogCaptureFixture
) -> None:
    built = policy_source(SIMPLE)
    cache = PolicyCache(tmp_path / "cache")
    prepared = cache.prepare(built.sha256, built.data)
    function_py = prepared.code_dir / "function.py"
    function_py.write_text(SIMPLE.replace('"original": True', '"original": False'))
    (prepared.code_dir / "planted.py").write_text("print('hi')")

    with caplog.at_level("WARNING", logger="aios.policy_runtime.cache"):
        repaired = PolicyCache(tmp_path / "cache").prepare(built.sha256)
    assert "policy_cache_tree_tampered" in caplog.text
    assert '"original": True' in (repaired.code_dir / "function.py").read_text()
    assert not (repaired.code_dir / "planted.py").exists()
    loaded = PolicyLoader(PolicyCache(tmp_path / "cache")).load("p:1-a", built.sha256, None, {}, {})
    assert loaded.eval({}) == {"original": True}


def test_concurrent_first_loads_extract_one_tree(
    tmp_path: Path, policy_source: Callable[..., BuiltPolicy]
) -> None:
    built = policy_source(SIMPLE, files={f"mod{i}.py": f"X = {i}\n" for i in range(20)})
    results: list[Path] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def load() -> None:
        try:
            barrier.wait(timeout=10)
            # Separate cache objects: no shared in-process lock, only the on-disk protocol.
            results.append(
                PolicyCache(tmp_path / "cache").prepare(built.sha256, built.data).code_dir
            )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=load) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors, errors
    assert len(set(results)) == 1
    assert len(list((tmp_path / "cache" / "code").iterdir())) == 1
    assert not list((tmp_path / "cache" / "tmp").iterdir())


def test_requirements_are_installed_once_per_hash_and_only_visible_to_the_import(
    tmp_path: Path, policy_source: Callable[..., BuiltPolicy]
) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    wheel = build_wheel(wheels, "aios_testdep", "1.0", "VALUE = 42\n")
    source = """
    import aios_testdep

    class AIOSv1PolicyRule:
        def __init__(self, rule_id, settings, parameters):
            pass

        def eval(self, parameters, input_data, context):
            return {"value": aios_testdep.VALUE}
    """
    requirements = f"# pinned test dependency\n{wheel}\n"
    first = policy_source(source, requirements=requirements)
    second = policy_source(
        source + "\n# another policy, same requirements\n", requirements=requirements
    )
    cache = PolicyCache(tmp_path / "cache", pip_args=("--no-index",), pip_timeout=120)

    prepared = cache.prepare(first.sha256, first.data)
    assert prepared.deps_dir is not None
    assert (prepared.deps_dir / "aios_testdep" / "__init__.py").is_file()
    assert cache.prepare(second.sha256, second.data).deps_dir == prepared.deps_dir

    loaded = PolicyLoader(cache).load("dep:1-a", first.sha256, first.data, {}, {})
    assert loaded.eval({}) == {"value": 42}
    assert str(prepared.deps_dir) not in sys.path
    assert str(prepared.code_dir) not in sys.path


def test_empty_requirements_are_skipped_and_failures_are_load_errors(
    tmp_path: Path, policy_source: Callable[..., BuiltPolicy]
) -> None:
    cache = PolicyCache(tmp_path / "cache", pip_args=("--no-index",), pip_timeout=120)
    empty = policy_source(SIMPLE, requirements="# only a comment\n\n")
    assert cache.prepare(empty.sha256, empty.data).deps_dir is None
    assert not (tmp_path / "cache" / "deps").exists()

    broken = policy_source(SIMPLE, requirements="aios-package-that-does-not-exist==9.9\n")
    with pytest.raises(PolicyError) as excinfo:
        cache.prepare(broken.sha256, broken.data)
    assert excinfo.value.code == PolicyErrorCode.LOAD_ERROR
    assert "requirements.txt failed" in excinfo.value.message
    assert not list((tmp_path / "cache" / "deps").glob("*"))


def test_store_refuses_a_bad_archive(tmp_path: Path) -> None:
    from tests.block_sdk.policy_runtime.policy_helpers import build_zip

    cache = PolicyCache(tmp_path / "cache")
    with pytest.raises(PolicyError) as excinfo:
        cache.store(build_zip([("code/function.py", GOOD_FUNCTION), ("../x", b"")]))
    assert excinfo.value.code == PolicyErrorCode.LOAD_ERROR
    assert not (tmp_path / "cache" / "archives").exists() or not any(
        (tmp_path / "cache" / "archives").iterdir()
    )
