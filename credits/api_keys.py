"""API keys: issue, hash, revoke, and the cached lookup behind ``Bearer <key>``.

A key is ``finn_`` + 256 random bits, shown once; only its SHA-256 is stored. A
lookup is cached for API_KEY_CACHE_SECONDS (300 s) under that hash; when Redis is
unavailable the degradation table sends lookups to PostgreSQL. Revoking a key
deletes its cache entry on commit, so it stops working at once (or, if Redis was
down at that moment, within one cache period at most).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import asdict, dataclass
from datetime import datetime

from django.conf import settings
from django.db import transaction

from billing.models import Account, AccountKind
from credits.models import ApiKey
from finn.degradation import redis_guard
from finn.errors import InvalidRequest
from finn.redis import get_redis

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
    """Revoke a key and drop its cached lookup once the revocation is committed."""
    with transaction.atomic():
        ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(revoked_at=now)
        key_hash = api_key.key_hash
        transaction.on_commit(lambda: api_key_cache_forget(key_hash))


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
