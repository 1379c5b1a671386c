"""Search tests change the entity registry; each test gets it back as it was."""

import pytest

from apps.search import registry


@pytest.fixture(autouse=True)
def fast_password_hasher(settings):
    # The shared user fixtures hash a password per test; the default hasher is slow.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def isolated_registry():
    entities = dict(registry._entities)
    extras = {k: list(v) for k, v in registry._extra_relations.items()}
    yield registry
    registry._entities.clear()
    registry._entities.update(entities)
    registry._extra_relations.clear()
    registry._extra_relations.update(extras)
