"""``Authorization: Bearer <key>`` for the API, with a Redis cache of lookups.

A lookup is cached for API_KEY_CACHE_SECONDS (300 s) under the key's SHA-256;
when Redis is unavailable the degradation table sends lookups to PostgreSQL.
Revoking a key deletes its cache entry, so it stops working at once (or, if
Redis was down at that moment, within one cache period at most).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from django.conf import settings
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from credits.models import ApiKey
from credits.services import KEY_PREFIX, api_key_hash
from finn.auth import Principal
from finn.degradation import redis_guard
from finn.redis import get_redis


@dataclass(frozen=True)
class CachedKey:
    api_key_id: int
    account_id: int
    is_staff: bool
    actor: str


def api_key_cache_key(key_hash: str) -> str:
    return f"credits:apikey:{key_hash}"


def _from_database(key_hash: str) -> CachedKey | None:
    key = ApiKey.objects.select_related("account__owner").filter(key_hash=key_hash, revoked_at__isnull=True).first()
    if key is None:
        return None
    owner = key.account.owner
    return CachedKey(
        api_key_id=key.pk,
        account_id=key.account_id,
        is_staff=bool(owner and owner.is_active and owner.is_staff),
        actor=owner.get_username() if owner else f"account:{key.account_id}",
    )


def api_key_lookup(key_hash: str) -> CachedKey | None:
    """Cache first, PostgreSQL on a miss or when Redis is down."""
    cache_key = api_key_cache_key(key_hash)

    def from_cache() -> CachedKey | None:
        raw: str | None = get_redis().get(cache_key)  # type: ignore[assignment]
        return CachedKey(**json.loads(raw)) if raw else None

    cached = redis_guard("api_key_cache", from_cache, fallback=lambda: None)
    if cached is not None:
        return cached
    found = _from_database(key_hash)
    if found is not None:
        redis_guard(
            "api_key_cache",
            lambda: get_redis().set(cache_key, json.dumps(asdict(found)), ex=settings.API_KEY_CACHE_SECONDS),
            fallback=lambda: None,
        )
    return found


def api_key_cache_forget(key_hash: str) -> None:
    redis_guard("api_key_cache", lambda: get_redis().delete(api_key_cache_key(key_hash)), fallback=lambda: 0)


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
        from credits.signin import jwt_decode

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
