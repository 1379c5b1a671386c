"""Websocket authentication by API token: ``?token=<key>`` or an ``Authorization: Token`` header.

Browsers cannot set headers on websockets, hence the query parameter. Falls through to
the session user set by Channels' AuthMiddlewareStack when no token is given.
"""

from __future__ import annotations

from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware


@database_sync_to_async
def _user_for_token(key: str):
    from rest_framework.authtoken.models import Token

    token = Token.objects.select_related("user").filter(key=key).first()
    return token.user if token and token.user.is_active else None


class TokenAuthMiddleware(BaseMiddleware):
    async def __call__(self, scope, receive, send):
        key = None
        query = parse_qs(scope.get("query_string", b"").decode())
        if query.get("token"):
            key = query["token"][0]
        for name, value in scope.get("headers", []):
            if name == b"authorization" and value.lower().startswith(b"token "):
                key = value.split(b" ", 1)[1].decode().strip()
        if key:
            user = await _user_for_token(key)
            if user is not None:
                scope = dict(scope, user=user)
        return await super().__call__(scope, receive, send)
