"""Secrets at rest: kubeconfigs are Fernet-encrypted with ``settings.AIOS_FERNET_KEY``.

The plaintext never reaches the database and is never serialized by the API; only the
driver that needs it decrypts it.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings

from apps.core.errors import ApiError


class SecretUnreadable(ApiError):
    status_code = 500
    code = "secret_unreadable"


def _fernet() -> Fernet:
    key = settings.AIOS_FERNET_KEY
    return Fernet(key.encode() if isinstance(key, str) else key)


def encrypt_text(plaintext: str) -> str:
    if not plaintext:
        return ""
    return _fernet().encrypt(plaintext.encode()).decode()


def decrypt_text(token: str) -> str:
    if not token:
        return ""
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        # The key changed since the secret was stored: say so instead of a stack trace.
        raise SecretUnreadable(
            "the stored kubeconfig cannot be decrypted with the current AIOS_FERNET_KEY"
        ) from None
