"""Seed the built-in policies (the same code as ``manage.py aios_seed_policies``)."""

from django.db import migrations


def seed(apps, schema_editor):
    from apps.policies.builtins import seed_builtin_policies

    seed_builtin_policies(apps.get_model("policies", "PolicyRule"))


class Migration(migrations.Migration):
    dependencies = [("policies", "0001_initial")]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
