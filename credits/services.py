"""Writes of the credits app: API keys (more arrives with issue 5)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings

from billing.models import Account, AccountKind
from credits.models import ApiKey
from finn.errors import InvalidRequest

KEY_PREFIX = "finn_"


@dataclass(frozen=True)
class IssuedKey:
    """A new key: ``secret`` is shown once and never stored."""

    api_key: ApiKey
    secret: str


def api_key_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _issue(*, account: Account, secret: str, name: str, now: datetime) -> IssuedKey:
    if account.kind == AccountKind.SYSTEM:
        raise InvalidRequest("system accounts cannot have API keys", reason="system_account")
    api_key = ApiKey.objects.create(
        account=account, name=name, prefix=secret[: len(KEY_PREFIX) + 8], key_hash=api_key_hash(secret), created_at=now
    )
    return IssuedKey(api_key=api_key, secret=secret)


def api_key_create(*, account: Account, name: str = "", now: datetime) -> IssuedKey:
    """Issue a random key (256 bits) for ``account``."""
    return _issue(account=account, secret=KEY_PREFIX + secrets.token_urlsafe(32), name=name, now=now)


def api_key_demo_secret(label: str) -> str:
    """A reproducible key for the demo account, derived from SECRET_KEY.

    ``seed_demo`` is idempotent and prints the same key on every run; anyone
    holding SECRET_KEY could derive it, which is acceptable for a demo
    account only.
    """
    digest = hmac.new(settings.SECRET_KEY.encode(), f"finn-demo-key:{label}".encode(), hashlib.sha256).hexdigest()
    return f"{KEY_PREFIX}demo_{digest[:40]}"


def api_key_ensure(*, account: Account, secret: str, name: str, now: datetime) -> IssuedKey:
    """Make sure ``secret`` is a live key of ``account`` (idempotent)."""
    existing = ApiKey.objects.filter(key_hash=api_key_hash(secret)).first()
    if existing is not None:
        if existing.account_id != account.pk:
            raise InvalidRequest("key belongs to another account", reason="key_conflict")
        return IssuedKey(api_key=existing, secret=secret)
    return _issue(account=account, secret=secret, name=name, now=now)


def api_key_revoke(*, api_key: ApiKey, now: datetime) -> None:
    ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(revoked_at=now)
