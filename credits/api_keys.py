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
import logging
import os
import secrets
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime

from django.conf import settings
from django.db import connection, transaction

from billing.models import Account, AccountKind
from credits.models import ApiKey
from finn.audit import audit_append
from finn.degradation import redis_guard
from finn.errors import InvalidRequest
from finn.redis import get_redis

logger = logging.getLogger(__name__)

KEY_PREFIX = "finn_"


@dataclass(frozen=True)
class IssuedKey:
    """A new key: ``secret`` is shown once and never stored."""

    api_key: ApiKey
    secret: str


def api_key_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _issue(*, account: Account, secret: str, name: str, now: datetime, actor: str = "") -> IssuedKey:
    if account.kind == AccountKind.SYSTEM:
        raise InvalidRequest("system accounts cannot have API keys", reason="system_account")
    with transaction.atomic():
        api_key = ApiKey.objects.create(
            account=account,
            name=name,
            prefix=secret[: len(KEY_PREFIX) + 8],
            key_hash=api_key_hash(secret),
            created_at=now,
        )
        audit_append(
            event_type="api_key_issued",
            payload={"api_key_id": str(api_key.pk), "prefix": api_key.prefix, "name": name},
            correlation_id=f"api_key:{api_key.pk}",
            now=now,
            account_id=account.pk,
            actor=actor,
        )
    return IssuedKey(api_key=api_key, secret=secret)


def api_key_create(*, account: Account, name: str = "", now: datetime, actor: str = "") -> IssuedKey:
    """Issue a random key (256 bits) for ``account``; audited."""
    return _issue(account=account, secret=KEY_PREFIX + secrets.token_urlsafe(32), name=name, now=now, actor=actor)


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


def api_key_revoke(*, api_key: ApiKey, now: datetime, actor: str = "") -> None:
    """Revoke a key (audited) and drop its cached lookup once the revocation is committed."""
    with transaction.atomic():
        if ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(revoked_at=now):
            audit_append(
                event_type="api_key_revoked",
                payload={"api_key_id": str(api_key.pk), "prefix": api_key.prefix},
                correlation_id=f"api_key:{api_key.pk}",
                now=now,
                account_id=api_key.account_id,
                actor=actor,
            )
        key_hash = api_key.key_hash
        transaction.on_commit(lambda: api_key_cache_forget(key_hash))


@dataclass(frozen=True)
class CachedKey:
    api_key_id: int
    account_id: int
    is_staff: bool
    actor: str
    rate_limit_per_minute: int | None = None


def api_key_rate_limit_set(*, api_key: ApiKey, per_minute: int | None, actor: str, now: datetime) -> None:
    """Override one key's request limit (None: the tier default); audited, effective within the caches' TTL."""
    if per_minute is not None and (isinstance(per_minute, bool) or not isinstance(per_minute, int) or per_minute < 1):
        raise InvalidRequest("rate_limit_per_minute must be a positive integer or empty", reason="invalid_rate_limit")
    with transaction.atomic():
        ApiKey.objects.filter(pk=api_key.pk).update(rate_limit_per_minute=per_minute)
        audit_append(
            event_type="api_key_rate_limit_set",
            payload={"api_key_id": str(api_key.pk), "rate_limit_per_minute": per_minute},
            correlation_id=f"api_key:{api_key.pk}",
            now=now,
            account_id=api_key.account_id,
            actor=actor,
        )
        key_hash = api_key.key_hash
        transaction.on_commit(lambda: api_key_cache_forget(key_hash))


def api_key_cache_key(key_hash: str) -> str:
    return f"credits:apikey:{key_hash}"


_KEY_SQL = (
    "SELECT k.id, k.account_id, k.rate_limit_per_minute, u.username, u.is_active, u.is_staff"
    " FROM credits_apikey k JOIN billing_account a ON a.id = k.account_id"
    " LEFT JOIN auth_user u ON u.id = a.owner_id WHERE k.key_hash = %s AND k.revoked_at IS NULL"
)


def _from_database(key_hash: str) -> CachedKey | None:
    # One statement (no ORM: it runs on every cold lookup of a gateway's key).
    with connection.cursor() as cursor:
        cursor.execute(_KEY_SQL, [key_hash])
        row = cursor.fetchone()
    if row is None:
        return None
    key_id, account_id, per_minute, username, is_active, is_staff = row
    return CachedKey(
        api_key_id=int(key_id),
        account_id=int(account_id),
        is_staff=bool(username is not None and is_active and is_staff),
        actor=str(username) if username is not None else f"account:{account_id}",
        rate_limit_per_minute=per_minute,
    )


# In-process copies of recent lookups (key hash → (expires at, key)), so the hot path needs no
# Redis round trip for authentication. A revocation or limit change drops the key from this
# process at once and is published on FORGET_CHANNEL, which every process listens to (a
# thread); a process that lost its subscription clears all its copies when it resubscribes.
# Bound when Redis is unreachable: a key revoked on another process keeps working here for at
# most API_KEY_LOCAL_CACHE_SECONDS.
_local: dict[str, tuple[float, CachedKey]] = {}
_LOCAL_MAX_KEYS = 100_000
FORGET_CHANNEL = "credits:apikey:forget"
_listener_pid = 0
_listener_lock = threading.Lock()


def _listen() -> None:
    while True:
        try:
            pubsub = get_redis().pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(FORGET_CHANNEL)
            _local.clear()  # anything published while unsubscribed is lost: start afresh
            while True:
                # Polls with a timeout below the client's socket timeout, so an idle channel
                # is not mistaken for a dropped connection.
                message = pubsub.get_message(timeout=0.5)
                if message is not None:
                    data = message.get("data")
                    _local.pop(data.decode() if isinstance(data, bytes) else str(data), None)
        except Exception as exc:  # Redis down or the connection dropped: retry, keep serving
            logger.warning("api key forget listener reconnecting", extra={"error": type(exc).__name__})
            _local.clear()
            time.sleep(1)


def _listener_ensure() -> None:
    global _listener_pid
    if _listener_pid == os.getpid():
        return
    with _listener_lock:
        if _listener_pid != os.getpid():
            _listener_pid = os.getpid()
            threading.Thread(target=_listen, name="api-key-forget", daemon=True).start()


def api_key_lookup(key_hash: str) -> CachedKey | None:
    """This process's copy, then Redis, then PostgreSQL (on a miss or when Redis is down)."""
    ttl = settings.API_KEY_LOCAL_CACHE_SECONDS
    if ttl > 0:
        _listener_ensure()
    now = time.monotonic()
    hit = _local.get(key_hash)
    if hit is not None and hit[0] > now:
        return hit[1]
    found = _shared_lookup(key_hash)
    if found is not None and ttl > 0:
        if len(_local) >= _LOCAL_MAX_KEYS:
            _local.clear()  # bounded memory; the next lookups refill it
        _local[key_hash] = (now + ttl, found)
    return found


def _shared_lookup(key_hash: str) -> CachedKey | None:
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
    """Drop every copy of a lookup: this process's, Redis's, and (published) every other process's."""
    _local.pop(key_hash, None)

    def forget() -> int:
        client = get_redis()
        client.delete(api_key_cache_key(key_hash))
        return int(client.publish(FORGET_CHANNEL, key_hash))  # type: ignore[arg-type]

    redis_guard("api_key_cache", forget, fallback=lambda: 0)
