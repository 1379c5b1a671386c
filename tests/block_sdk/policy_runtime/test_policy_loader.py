"""In-process loading (Type 1): import, class lookup, instance cache, clear load errors."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from block_sdk.policy_runtime.cache import PolicyCache
from block_sdk.policy_runtime.errors import PolicyError, PolicyErrorCode
from block_sdk.policy_runtime.loader import PolicyLoader, canonical_json
from tests.block_sdk.policy_runtime.policy_helpers import COUNTER_POLICY, BuiltPolicy


@pytest.fixture
def loader(tmp_path: Path) -> PolicyLoader:
    return PolicyLoader(PolicyCache(tmp_path / "cache"), max_instances=4)


def _load(loader: PolicyLoader, built: BuiltPolicy, settings=None, parameters=None, **kw):
    return loader.load(
        "test:1.0-a", built.sha256, built.data, settings or {}, parameters or {}, **kw
    )


def test_instance_is_built_with_rule_id_settings_parameters_and_keeps_state(
    loader: PolicyLoader, policy_source: Callable[..., BuiltPolicy]
) -> None:
    built = policy_source(COUNTER_POLICY)
    loaded = _load(loader, built, {"start": 10}, {"step": 5})
    assert loaded.eval({}) == {"total": 15}
    assert loaded.eval({"add": 1}) == {"total": 16}
    assert loaded.management("get_state", None) == {"total": 16}
    assert loaded.management("reset", {"to": 2}) == {"total": 2}


def test_instances_are_cached_per_settings_and_parameters(
    loader: PolicyLoader, policy_source: Callable[..., BuiltPolicy]
) -> None:
    built = policy_source(COUNTER_POLICY)
    a = _load(loader, built, {"start": 1, "x": [1, 2]}, {"step": 1})
    same = _load(loader, built, {"x": [1, 2], "start": 1}, {"step": 1})  # key order is irrelevant
    other_settings = _load(loader, built, {"start": 2}, {"step": 1})
    other_params = _load(loader, built, {"start": 1, "x": [1, 2]}, {"step": 2})
    assert a is same
    assert other_settings is not a and other_params is not a
    for i in range(10):  # bounded LRU
        _load(loader, built, {"start": 100 + i}, {})
    assert len(loader) == 4
    assert _load(loader, built, {"start": 1, "x": [1, 2]}, {"step": 1}) is not a


def test_helpers_in_settings_key_the_cache_by_identity(
    loader: PolicyLoader, policy_source: Callable[..., BuiltPolicy]
) -> None:
    built = policy_source(COUNTER_POLICY)

    def helper_a() -> int:
        return 1

    def helper_b() -> int:
        return 2

    first = _load(loader, built, {"get_metrics": helper_a}, {})
    assert _load(loader, built, {"get_metrics": helper_a}, {}) is first
    assert _load(loader, built, {"get_metrics": helper_b}, {}) is not first
    assert canonical_json({"b": 1, "a": [1, {"d": 2, "c": 3}]}) == '{"a":[1,{"c":3,"d":2}],"b":1}'


def test_policies_with_same_helper_module_names_do_not_clash(
    loader: PolicyLoader, policy_source: Callable[..., BuiltPolicy]
) -> None:
    source = """
    import helpers
    from . import relative_helper

    class AIOSv1PolicyRule:
        def __init__(self, rule_id, settings, parameters):
            pass

        def eval(self, parameters, input_data, context):
            return [helpers.NAME, relative_helper.NAME]
    """
    one = policy_source(
        source, files={"helpers.py": "NAME = 'one'", "relative_helper.py": "NAME = 'r1'"}
    )
    two = policy_source(
        source, files={"helpers.py": "NAME = 'two'", "relative_helper.py": "NAME = 'r2'"}
    )
    assert _load(loader, one).eval({}) == ["one", "r1"]
    assert _load(loader, two).eval({}) == ["two", "r2"]
    assert "helpers" not in sys.modules


def test_custom_class_name_is_found(loader: PolicyLoader, policy_source) -> None:
    built = policy_source(
        """
        class ClusterSelectorPolicyRule:
            def __init__(self, rule_id, settings, parameters):
                self.rule_id = rule_id

            def eval(self, parameters, input_data, context):
                return {"rule_id": self.rule_id}
        """
    )
    loaded = _load(loader, built, class_name="ClusterSelectorPolicyRule")
    assert loaded.eval({}) == {"rule_id": "test:1.0-a"}


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("class Other:\n    def eval(self, p, i, c): pass\n", "class 'AIOSv1PolicyRule' not found"),
        ("class AIOSv1PolicyRule:\n    def eval(self, p, i, c)\n        pass\n", "SyntaxError"),
        ("import module_that_does_not_exist\n", "ModuleNotFoundError"),
        ("raise RuntimeError('import-time failure')\n", "RuntimeError: import-time failure"),
        ("import sys\nsys.exit(4)\n", "SystemExit"),
        ("AIOSv1PolicyRule = 42\n", "not a class with an eval() method"),
        (
            "class AIOSv1PolicyRule:\n"
            "    def __init__(self, r, s, p):\n"
            "        raise KeyError('needs setting x')\n"
            "    def eval(self, p, i, c): pass\n",
            "__init__ failed: KeyError",
        ),
    ],
    ids=["missing-class", "syntax-error", "missing-import", "import-raises", "import-exits",
         "not-a-class", "init-raises"],
)  # fmt: skip
def test_load_failures_are_load_errors_with_a_clear_message(
    loader: PolicyLoader, policy_source: Callable[..., BuiltPolicy], source: str, fragment: str
) -> None:
    built = policy_source(source)
    with pytest.raises(PolicyError) as excinfo:
        _load(loader, built)
    assert excinfo.value.code == PolicyErrorCode.LOAD_ERROR
    assert fragment in excinfo.value.message


def test_syntax_error_names_the_line(loader: PolicyLoader, policy_source) -> None:
    built = policy_source("x = 1\n\ndef broken(:\n    pass\n")
    with pytest.raises(PolicyError, match=r"function\.py, line 3"):
        _load(loader, built)


def test_eval_exception_is_reported_as_type_and_message_with_policy_frames(
    loader: PolicyLoader, policy_source: Callable[..., BuiltPolicy]
) -> None:
    built = policy_source(
        """
        class AIOSv1PolicyRule:
            def __init__(self, rule_id, settings, parameters):
                pass

            def eval(self, parameters, input_data, context):
                return 1 / input_data["d"]
        """
    )
    loaded = _load(loader, built)
    with pytest.raises(PolicyError) as excinfo:
        loaded.eval({"d": 0})
    assert excinfo.value.code == PolicyErrorCode.EXCEPTION
    assert excinfo.value.message == "ZeroDivisionError: division by zero"
    assert str(excinfo.value) == "exception: ZeroDivisionError: division by zero"
    assert any(frame.startswith("function.py:") for frame in excinfo.value.details)


def test_policy_without_management_answers_a_clear_error(
    loader: PolicyLoader, policy_source: Callable[..., BuiltPolicy]
) -> None:
    built = policy_source(
        "class AIOSv1PolicyRule:\n"
        "    def __init__(self, r, s, p): pass\n"
        "    def eval(self, p, i, c): return c.setdefault('n', 0)\n"
    )
    loaded = _load(loader, built)
    with pytest.raises(PolicyError, match="no management"):
        loaded.management("get_state", {})
