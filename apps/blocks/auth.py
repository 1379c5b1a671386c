"""The block controller's credential: a per-block service token.

The control plane issues one token per block (``runtime.issue_token``), stores only its
sha256, and hands the token to the block's controller through Redis. The controller sends
``Authorization: Bearer aios-blk-...``; the request is then made by a
:class:`BlockServicePrincipal` that may scale, replace instances of and report health for
*its own block* and nothing else (``services.ensure_can_manage``).
"""

from __future__ import annotations

from dataclasses import dataclass

from rest_framework import authentication, exceptions

TOKEN_PREFIX = "aios-blk-"  # noqa: S105 - a prefix, not a secret


@dataclass(frozen=True)
class BlockServicePrincipal:
    """The authenticated "user" of a request made with a block's service token."""

    block_id: str
    is_authenticated: bool = True
    is_anonymous: bool = False
    is_staff: bool = False
    is_superuser: bool = False
    is_active: bool = True
    pk: None = None
    id: None = None

    @property
    def username(self) -> str:
        return f"block:{self.block_id}"

    def get_username(self) -> str:
        return self.username

    def __str__(self) -> str:
        return self.username


class BlockServiceTokenAuthentication(authentication.BaseAuthentication):
    """``Authorization: Bearer aios-blk-<token>``; other schemes are left to DRF's own."""

    keyword = "Bearer"

    def authenticate(self, request):
        parts = authentication.get_authorization_header(request).split()
        if len(parts) != 2 or parts[0].lower() != self.keyword.lower().encode():
            return None
        try:
            token = parts[1].decode()
        except UnicodeError:
            raise exceptions.AuthenticationFailed("invalid token header") from None
        if not token.startswith(TOKEN_PREFIX):
            return None
        from apps.blocks.models import Block
        from apps.blocks.runtime import hash_token

        block_id = (
            Block.objects.filter(service_token_hash=hash_token(token))
            .values_list("pk", flat=True)
            .first()
        )
        if block_id is None:
            raise exceptions.AuthenticationFailed("unknown or revoked block service token")
        return BlockServicePrincipal(block_id), token

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="aios"'


try:
    from drf_spectacular.extensions import OpenApiAuthenticationExtension
except ImportError:  # pragma: no cover - drf-spectacular is a dependency
    OpenApiAuthenticationExtension = None

if OpenApiAuthenticationExtension is not None:

    class BlockServiceTokenScheme(OpenApiAuthenticationExtension):
        """Documents the service token in the OpenAPI schema (registered on import)."""

        target_class = "apps.blocks.auth.BlockServiceTokenAuthentication"
        name = "blockServiceToken"

        def get_security_definition(self, auto_schema):
            return {
                "type": "http",
                "scheme": "bearer",
                "description": "a block's service token (aios-blk-...), used by its controller",
            }
