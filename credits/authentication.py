"""``Authorization: Bearer <key>`` for the API."""

from __future__ import annotations

from typing import Any

from rest_framework import authentication, exceptions
from rest_framework.request import Request

from credits.models import ApiKey
from credits.services import api_key_hash
from finn.auth import Principal


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[Principal, ApiKey] | None:
        header = request.headers.get("Authorization")
        if not header:
            return None
        parts = header.split()
        if len(parts) != 2 or parts[0].lower() != self.keyword.lower():
            raise exceptions.AuthenticationFailed("Authorization header must be 'Bearer <api key>'")
        key = (
            ApiKey.objects.select_related("account__owner")
            .filter(key_hash=api_key_hash(parts[1]), revoked_at__isnull=True)
            .first()
        )
        if key is None:
            raise exceptions.AuthenticationFailed("invalid or revoked API key")
        owner = key.account.owner
        principal = Principal(
            account_id=key.account_id,
            api_key_id=key.pk,
            is_staff=bool(owner and owner.is_active and owner.is_staff),
            actor=owner.get_username() if owner else f"account:{key.account_id}",
        )
        return principal, key

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="finn"'


def _schema_extension() -> Any:
    from drf_spectacular.extensions import OpenApiAuthenticationExtension

    class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
        target_class = "credits.authentication.ApiKeyAuthentication"
        name = "ApiKeyAuth"

        def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
            return {"type": "http", "scheme": "bearer", "description": "finn API key"}

    return ApiKeyAuthenticationScheme


ApiKeyAuthenticationScheme = _schema_extension()
