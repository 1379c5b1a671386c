"""deploy/helm/render.py: the helm-free renderer of the chart's template subset.

Where Helm's own engine is available (a `helm` binary, or the helm-python-sdk package that
embeds Helm's Go library), the chart is rendered by both and must come out byte for byte the
same, and `helm lint --strict` must pass. Without it, those tests skip and say why.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.deploy.support import (
    CHART,
    FIXED_SECRETS,
    NAMESPACE,
    NO_HELM_REASON,
    RELEASE,
    ROOT,
    VALUE_SETS,
    helm_binary,
    helm_engine,
    renderer,
)


def _chart(tmp_path: Path, template: str, values: str = "", sub: str | None = None) -> Path:
    root = tmp_path / "c"
    (root / "templates").mkdir(parents=True)
    (root / "Chart.yaml").write_text("apiVersion: v2\nname: c\nversion: 1.2.3\nappVersion: '9'\n")
    (root / "values.yaml").write_text(values)
    (root / "templates" / "t.yaml").write_text(template)
    if sub is not None:
        (root / "charts" / "s" / "templates").mkdir(parents=True)
        (root / "charts" / "s" / "Chart.yaml").write_text(
            "apiVersion: v2\nname: s\nversion: 0.1.0\n"
        )
        (root / "charts" / "s" / "values.yaml").write_text("x: sub-default\ny: 1\n")
        (root / "charts" / "s" / "templates" / "t.yaml").write_text(sub)
        (root / "Chart.yaml").write_text(
            "apiVersion: v2\nname: c\nversion: 1.2.3\ndependencies:\n"
            "  - {name: s, version: 0.1.0, condition: s.enabled}\n"
        )
    return root


def _render(chart: Path, values: dict | None = None) -> str:
    return renderer().render_chart(chart, values or {}, release_name="r")["c/templates/t.yaml"]


def test_trim_markers_remove_whitespace_on_their_side_only(tmp_path) -> None:
    chart = _chart(tmp_path, "a:\n  {{- if true }}\n  b: 1\n  {{- end }}\nc: {{ 2 -}}  \n  !\n")
    assert _render(chart) == "a:\n  b: 1\nc: 2!\n"


def test_control_structures_and_variable_scopes(tmp_path) -> None:
    template = (
        '{{- $x := 1 }}{{ if false }}no{{ else if eq .Values.s "hi" }}elif{{ else }}else{{ end }}\n'
        "{{- range $k, $v := .Values.m }} {{ $k }}={{ $v }}{{ end }}\n"
        "{{- range .Values.empty }}x{{ else }} none{{ end }}\n"
        "{{- with .Values.s }} with={{ . }}{{ end }}"
        "{{ with .Values.nope }}w{{ else }} nowith{{ end }}\n"
        "{{- if true }}{{ $x = 2 }}{{ $y := 3 }}{{ end }} x={{ $x }}"
    )
    chart = _chart(tmp_path, template, "s: hi\nm: {b: 2, a: 1}\nempty: []\n")
    assert _render(chart) == "elif a=1 b=2 none with=hi nowith x=2"


def test_variables_declared_in_a_block_are_gone_after_it(tmp_path) -> None:
    chart = _chart(tmp_path, "{{ if true }}{{ $y := 1 }}{{ end }}{{ $y }}")
    with pytest.raises(renderer().RenderError, match=r"t\.yaml:1: undefined variable \$y"):
        _render(chart)


def test_include_define_and_pipelines(tmp_path) -> None:
    template = (
        '{{- define "n" }}{{ .a }}-{{ .b | default "B" }}{{ end -}}\n'
        'v: {{ include "n" (dict "a" .Release.Name "b" "") | upper | quote }}\n'
        "y: {{- toYaml .Values.m | nindent 2 }}\n"
        'p: {{ printf "%s:%v" .Chart.Name .Values.n }} {{ trunc 3 "abcdef" }}'
        " {{ .Chart.AppVersion }}"
    )
    chart = _chart(tmp_path, template, "m: {k: [1, '2']}\nn: 1000000\n")
    assert _render(chart) == 'v: "R-B"\ny:\n  k:\n  - 1\n  - "2"\np: c:1e+06 abc 9'


def test_missing_values_print_nothing_but_fields_of_nothing_are_errors(tmp_path) -> None:
    assert _render(_chart(tmp_path / "a", "[{{ .Values.nope }}]")) == "[]"
    chart = _chart(tmp_path / "b", "\n{{ .Values.nope.deeper }}")
    with pytest.raises(renderer().RenderError, match=r"t\.yaml:2: nil pointer evaluating"):
        _render(chart)


def test_unknown_functions_and_required_values_fail_with_where_and_why(tmp_path) -> None:
    with pytest.raises(renderer().RenderError, match=r'function "tplx" not defined'):
        _render(_chart(tmp_path / "a", "{{ tplx 1 }}"))
    with pytest.raises(renderer().RenderError, match="set the thing"):
        _render(_chart(tmp_path / "b", '{{ required "set the thing" .Values.thing }}'))
    with pytest.raises(renderer().RenderError, match="unclosed action"):
        _render(_chart(tmp_path / "c", "{{ .Values.x "))


def test_subcharts_get_their_values_and_respect_their_condition(tmp_path) -> None:
    chart = _chart(
        tmp_path,
        "parent sees {{ .Values.s.x }}",
        "s: {enabled: true, x: from-parent}\nglobal: {g: 1}\n",
        sub="{{ .Values.x }} {{ .Values.y }} {{ .Values.global.g }} {{ .Chart.Name }}",
    )
    out = renderer().render_chart(chart, {}, release_name="r")
    assert out["c/charts/s/templates/t.yaml"] == "from-parent 1 1 s"
    assert out["c/templates/t.yaml"] == "parent sees from-parent"
    off = renderer().render_chart(chart, {"s": {"enabled": False}}, release_name="r")
    assert "c/charts/s/templates/t.yaml" not in off


def test_user_values_merge_deeply_and_null_removes_a_default(tmp_path) -> None:
    chart = _chart(tmp_path, "{{ toJson .Values }}", "a: {b: 1, c: 2}\nd: 3\n")
    assert _render(chart, {"a": {"c": 5}, "d": None}) == '{"a":{"b":1,"c":5},"global":{}}'


def test_cli_prints_documents_like_helm_template() -> None:
    result = subprocess.run(
        [sys.executable, "deploy/helm/render.py", "deploy/helm/aios", "--name", "demo",
         "--set", "flower.enabled=false", "--show-only", "templates/web-service.yaml"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("---\n# Source: aios/templates/web-service.yaml\n")
    service = yaml.safe_load(result.stdout)
    assert service["metadata"]["name"] == "demo-aios-web"
    bad = subprocess.run(
        [sys.executable, "deploy/helm/render.py", "deploy/helm/aios",
         "--set", "redis.enabled=false"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert bad.returncode == 1
    assert "set externalRedis.url or externalRedis.existingSecret" in bad.stderr


# ------------------------------------------------------- against Helm's own engine ----
def _deterministic(name: str) -> dict:
    values = dict(VALUE_SETS[name])
    if name not in {"existing-secrets"}:
        for key, value in FIXED_SECRETS.items():
            values[key] = renderer().merge_values(values.get(key) or {}, value)
    return values


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_render_py_output_is_identical_to_helms(name) -> None:
    engine = helm_engine()
    if engine is None and helm_binary() is None:
        pytest.skip(NO_HELM_REASON)
    values = _deterministic(name)
    ours = renderer().render_chart(
        CHART, values, release_name=RELEASE, namespace=NAMESPACE, include_notes=True
    )
    if engine is not None:
        with engine.Chart.load(str(CHART)) as chart:
            theirs = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
        theirs = {k: v for k, v in theirs.items() if not Path(k).name.startswith("_")}
        assert sorted(ours) == sorted(theirs)
        for template in ours:
            assert ours[template] == theirs[template], template
    if helm_binary() is not None:
        values_file = Path(f"/tmp/aios-values-{name}.yaml")
        values_file.write_text(yaml.safe_dump(values))
        result = subprocess.run(
            [helm_binary(), "template", RELEASE, str(CHART), "-n", NAMESPACE,
             "-f", str(values_file)],
            capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
        theirs_objects = [d for d in yaml.safe_load_all(result.stdout) if d]
        ours_objects = renderer().render_manifests(
            CHART, values, release_name=RELEASE, namespace=NAMESPACE
        )
        key = lambda o: (o["kind"], o["metadata"]["name"])  # noqa: E731
        assert sorted(ours_objects, key=key) == sorted(theirs_objects, key=key)


def test_helm_lint_strict_passes() -> None:
    engine = helm_engine()
    if engine is None and helm_binary() is None:
        pytest.skip(NO_HELM_REASON)
    if engine is not None:
        report = engine.lint(str(CHART), strict=True, kube_version="v1.34.0", with_subcharts=True)
        problems = [m for m in report["messages"] if m["severity"] >= 2]
        assert not problems and not report["errors"], report
    if helm_binary() is not None:
        result = subprocess.run(
            [helm_binary(), "lint", "--strict", "--with-subcharts", str(CHART)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
