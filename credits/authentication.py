"""DRF authentication: ``Authorization: Bearer <API key>`` or ``Bearer <SIWE access token>``.

Key lookups (and their cache) are ``credits.api_keys``; tokens are ``credits.tokens``.
"""

from __future__ import annotations

from typing import Any

from rest_framework import authentication, exceptions
from rest_framework.request import Request

from credits.api_keys import KEY_PREFIX, CachedKey, api_key_hash, api_key_lookup
from credits.tokens import jwt_decode
from finn.auth import Principal


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[Principal, CachedKey] | None:
        header = request.headers.get("Authorization")
        if not header:
            return None
        parts = header.split()
        if len(parts) != 2 or parts[0].lower() != self.keyword.lower():
            raise exceptions.AuthenticationFailed("Authorization header must be 'Bearer <api key>'")
        if _looks_like_jwt(parts[1]):
            return None  # a sign-in session: JwtAuthentication's turn
        found = api_key_lookup(api_key_hash(parts[1]))
        if found is None:
            raise exceptions.AuthenticationFailed("invalid or revoked API key")
        principal = Principal(
            account_id=found.account_id, api_key_id=found.api_key_id, is_staff=found.is_staff, actor=found.actor
        )
        return principal, found

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="finn"'


def _looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and not token.startswith(KEY_PREFIX)


class JwtAuthentication(authentication.BaseAuthentication):
    """``Authorization: Bearer <access token>`` from Sign-In with Ethereum (900 s)."""

    def authenticate(self, request: Request) -> tuple[Principal, dict[str, Any]] | None:
        header = request.headers.get("Authorization") or ""
        parts = header.split()
        if len(parts) != 2 or parts[0].lower() != "bearer" or not _looks_like_jwt(parts[1]):
            return None
        try:
            claims = jwt_decode(parts[1])
        except Exception:
            raise exceptions.AuthenticationFailed("invalid or expired session token") from None
        principal = Principal(account_id=int(claims["sub"]), api_key_id=0, actor=str(claims.get("wallet", "")))
        return principal, claims

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="finn"'


def _schema_extension() -> Any:
    from drf_spectacular.extensions import OpenApiAuthenticationExtension

    class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
        target_class = "credits.authentication.ApiKeyAuthentication"
        name = "ApiKeyAuth"

        def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
            return {"type": "http", "scheme": "bearer", "description": "finn API key"}

    class JwtAuthenticationScheme(OpenApiAuthenticationExtension):
        target_class = "credits.authentication.JwtAuthentication"
        name = "SessionToken"

        def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
            return {"type": "http", "scheme": "bearer", "bearerFormat": "JWT", "description": "SIWE session"}

    return ApiKeyAuthenticationScheme, JwtAuthenticationScheme


ApiKeyAuthenticationScheme, JwtAuthenticationScheme = _schema_extension()
