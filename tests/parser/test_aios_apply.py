"""``manage.py aios_apply``: spec files through the parser service, in-process, as a
user; long actions followed with a progress bar (a real Celery worker runs the task)."""

import json

import pytest
import yaml
from django.core.management import call_command
from rest_framework.authtoken.models import Token

from apps.parser.models import ParserTask
from apps.registries.models import Component
from tests.parser.specs import VALID
from tests.registries.factories import component_values, envelope


def apply(*args, **options):
    """Run the command; returns (exit code, stdout, stderr)."""
    import io

    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("aios_apply", *args, stdout=out, stderr=err, **options)
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def admin(django_user_model):
    return django_user_model.objects.create_superuser("admin", "admin@example.com", "pw")


@pytest.mark.django_db
def test_json_file_as_the_default_admin(tmp_path, admin):
    path = tmp_path / "component.json"
    path.write_text(json.dumps(envelope(component_values())))
    code, out, err = apply(str(path))
    assert code == 0, err
    assert out.startswith("201 createComponent")
    assert '"componentURI": "model.echo:1.0.0-stable"' in out
    assert Component.objects.get().owner == admin
    assert ParserTask.objects.get().owner == admin


@pytest.mark.django_db
def test_yaml_file_as_a_user_or_token(tmp_path, user, other_user):
    path = tmp_path / "component.yaml"
    path.write_text(yaml.safe_dump(envelope(component_values(name="y"))))
    code, _, _ = apply(str(path), user="alice")
    assert code == 0
    assert Component.objects.get().owner == user

    token = Token.objects.create(user=other_user)
    path.write_text(yaml.safe_dump(envelope(component_values(name="z"))))
    code, _, _ = apply(str(path), token=token.key)
    assert code == 0
    assert Component.objects.get(name="z").owner == other_user


@pytest.mark.django_db
def test_action_is_guessed_or_given(tmp_path, admin):
    path = tmp_path / "filter.json"
    path.write_text(json.dumps(envelope(VALID["filter"], at_body=True)))
    code, out, _ = apply(str(path))
    assert code == 0 and out.startswith("200 filter")

    path.write_text(json.dumps({"action": "addComponent", **envelope(component_values())}))
    code, out, _ = apply(str(path))
    assert code == 0 and out.startswith("201 createComponent")
    assert ParserTask.objects.filter(requested_action="addComponent").exists()


@pytest.mark.django_db
def test_failures_exit_non_zero(tmp_path, admin):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(envelope({"componentId": {"name": "x"}, "componentType": "model"})))
    code, out, _ = apply(str(path))
    assert code == 1
    assert out.startswith("400 createComponent")
    assert "/body/spec/values/componentId/version" in out

    assert apply(str(tmp_path / "missing.json"))[0] == 2
    (tmp_path / "broken.yaml").write_text("a: [")
    assert apply(str(tmp_path / "broken.yaml"))[0] == 2
    (tmp_path / "unknown.json").write_text(json.dumps(envelope({"x": 1})))
    code, _, err = apply(str(tmp_path / "unknown.json"))
    assert code == 2 and "--action" in err
    assert apply(str(path), user="nobody")[0] == 2
    assert apply(str(path), token="nope")[0] == 2
    assert apply(str(path), action="flyAway")[0] == 2


@pytest.mark.django_db
def test_no_superuser_needs_user_flag(tmp_path, user):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(envelope(component_values())))
    code, _, err = apply(str(path))
    assert code == 2 and "superuser" in err


@pytest.mark.django_db
def test_with_spec_uri(admin):
    from apps.registries import services as registries

    registries.create_spec(
        name="stored", version="1", tag="x", spec_type="component", spec_data=component_values()
    )
    code, out, _ = apply(spec_uri="stored:1-x", action="createComponent")
    assert code == 0 and out.startswith("201")
    assert apply(spec_uri="stored:1-x")[0] == 2


@pytest.mark.django_db(transaction=True)
def test_long_action_is_followed_with_a_progress_bar(tmp_path, settings, celery_worker, admin):
    settings.AIOS_PARSER_HANDLERS = {"createBlock": "tests.parser.handlers.long_action"}
    path = tmp_path / "block.json"
    path.write_text(json.dumps(envelope({**VALID["createBlock"], "maxInstances": 4})))
    code, out, err = apply(str(path), poll=0.05, timeout=60)
    assert code == 0, out + err
    assert out.startswith("202 createBlock")
    assert "[##############################] 100%" in out
    assert "completed" in out
    bars = [line for line in out.splitlines() if line.startswith("[")]
    assert len(bars) >= 3  # it showed the task moving, not only its end
    assert any("step 2/4" in line for line in bars)


@pytest.mark.django_db(transaction=True)
def test_failed_task_and_timeout(tmp_path, settings, celery_worker, admin):
    settings.AIOS_PARSER_HANDLERS = {"createBlock": "tests.parser.handlers.long_action"}
    path = tmp_path / "block.json"
    path.write_text(
        json.dumps(envelope({**VALID["createBlock"], "minInstances": 0, "maxInstances": 3}))
    )
    code, _, err = apply(str(path), poll=0.05, timeout=60)
    assert code == 1
    assert "asked to fail at step 1" in err

    path.write_text(json.dumps(envelope({**VALID["createBlock"], "maxInstances": 6})))
    code, _, err = apply(str(path), poll=0.05, timeout=0.3)
    assert code == 3
    assert "/api/v1/tasks/" in err
