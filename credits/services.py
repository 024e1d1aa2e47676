"""Writes of the credits app: API keys (more arrives with issue 5)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction

from billing.models import Account, AccountKind
from credits.metrics import nonce_cleanup_duration_seconds, nonce_replays_total, nonces_deleted_total
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
    """Revoke a key and drop its cached lookup once the revocation is committed."""
    from credits.authentication import api_key_cache_forget  # authentication imports services

    with transaction.atomic():
        ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(revoked_at=now)
        key_hash = api_key.key_hash
        transaction.on_commit(lambda: api_key_cache_forget(key_hash))


# --- nonces -------------------------------------------------------------------


def nonce_key(*parts: str) -> str:
    """SHA-256 of the identifying fields (lower-cased, joined unambiguously)."""
    material = "\x1f".join(part.strip().lower() for part in parts)
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


def nonce_consume(*, kind: str, parts: tuple[str, ...], now: datetime) -> bool:
    """Record a nonce as used; False if it was used before (a replay)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO credits_usednonce (key, kind, created_at) VALUES (%s, %s, %s) ON CONFLICT (key) DO NOTHING"
            " RETURNING key",
            [nonce_key(kind, *parts), kind, now],
        )
        fresh = cursor.fetchone() is not None
    if not fresh:
        nonce_replays_total.labels(kind).inc()
    return fresh


@dataclass(frozen=True)
class CleanupResult:
    deleted: int
    seconds: float


def nonce_cleanup(
    *, now: datetime, max_age_hours: int | None = None, batch_size: int = 5000, max_batches: int = 200
) -> CleanupResult:
    """Delete used nonces older than the window in bounded batches; report the real count."""
    started = time.monotonic()
    cutoff = now - timedelta(hours=max_age_hours or settings.NONCE_MAX_AGE_HOURS)
    deleted = 0
    for _ in range(max_batches):
        with connection.cursor() as cursor:
            cursor.execute(
                "DELETE FROM credits_usednonce WHERE key IN (SELECT key FROM credits_usednonce WHERE created_at < %s"
                " LIMIT %s)",
                [cutoff, batch_size],
            )
            count = cursor.rowcount
        deleted += count
        if count < batch_size:
            break
    seconds = time.monotonic() - started
    nonces_deleted_total.inc(deleted)
    nonce_cleanup_duration_seconds.set(seconds)
    return CleanupResult(deleted=deleted, seconds=seconds)
