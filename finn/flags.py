"""Feature flags and the beta allowlist: rows in PostgreSQL, cached in Redis for 60 s.

A flag without a row has its default (``flag_defaults``); x402 also needs its
treasury address configured. Changes through the services drop the cache on
commit, so every process sees them within one request.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import datetime

import redis
from django.conf import settings
from django.db import transaction

from finn.audit import audit_append
from finn.degradation import redis_guard
from finn.errors import DomainError, InvalidRequest
from finn.models import BetaAllowlistEntry, FeatureFlag
from finn.redis import get_redis

FLAGS = ("billing", "credits", "nft", "onboarding", "x402", "x402_public")
CACHE_SECONDS = 60


class FeatureDisabled(DomainError):
    """A feature turned off is not an outage: 404 (clients and fuzzers do not retry it as a 5xx)."""

    code = "feature_disabled"
    status = 404


def require_feature(name: str, message: str) -> None:
    """404 ``feature_disabled`` (with ``message``) unless the flag ``name`` is on; 503 stays for outages."""
    if not feature_enabled(name):
        raise FeatureDisabled(message)


def flag_defaults() -> dict[str, bool]:
    return {
        "billing": True,
        "credits": True,
        "nft": True,
        "onboarding": True,
        "x402": bool(settings.FEATURE_X402),
        "x402_public": False,
    }


def _cache_key(name: str) -> str:
    return f"finn:flag:{name}"


def _cached_bool(key: str, read: Callable[[], bool]) -> bool:
    """A yes/no from Redis (60 s), else from ``read()`` (PostgreSQL) and cached; Redis down → ``read()``."""
    cached = redis_guard("feature_flags", lambda: get_redis().get(key), fallback=lambda: None)
    if cached in ("1", "0"):
        return cached == "1"
    value = read()
    redis_guard(
        "feature_flags", lambda: get_redis().set(key, "1" if value else "0", ex=CACHE_SECONDS), fallback=lambda: None
    )
    return value


def feature_enabled(name: str) -> bool:
    if name not in FLAGS:
        raise KeyError(f"unknown feature flag {name!r}")

    def from_database() -> bool:
        row = FeatureFlag.objects.filter(name=name).values_list("enabled", flat=True).first()
        return flag_defaults()[name] if row is None else bool(row)

    enabled = _cached_bool(_cache_key(name), from_database)
    if name == "x402":
        return enabled and bool(settings.X402_PAY_TO)
    return enabled


def _forget(key: str) -> None:
    """Drop the cached value now and again after commit (a reader may re-cache the old row in between)."""

    def drop() -> None:
        with contextlib.suppress(redis.RedisError, OSError):
            get_redis().delete(key)

    drop()
    transaction.on_commit(drop)


def feature_flag_set(*, name: str, enabled: bool, actor: str, now: datetime) -> FeatureFlag:
    if name not in FLAGS:
        raise InvalidRequest(f"unknown feature flag {name!r}", reason="unknown_flag")
    with transaction.atomic():  # not durable: the admin's change view already holds a transaction
        flag, _ = FeatureFlag.objects.update_or_create(name=name, defaults={"enabled": enabled, "updated_at": now})
        audit_append(
            event_type="feature_flag_set",
            payload={"name": name, "enabled": enabled},
            correlation_id=f"flag:{name}",
            now=now,
            actor=actor,
        )
        _forget(_cache_key(name))
    return flag


def _allowlist_key(address: str) -> str:
    return f"finn:allowlist:{address}"


def allowlisted(address: str) -> bool:
    address = address.lower()
    if address in {a.lower() for a in settings.BETA_BYPASS_ADDRESSES}:
        return True
    return _cached_bool(_allowlist_key(address), lambda: BetaAllowlistEntry.objects.filter(address=address).exists())


def allowlist_add(*, address: str, note: str = "", actor: str, now: datetime) -> BetaAllowlistEntry:
    if not isinstance(address, str) or len(address) != 42 or not address.startswith("0x"):
        raise InvalidRequest("address must be a 0x-prefixed 20-byte hex address", reason="invalid_address")
    address = address.lower()
    with transaction.atomic():  # not durable: the admin's change view already holds a transaction
        entry, _ = BetaAllowlistEntry.objects.get_or_create(address=address, defaults={"note": note, "created_at": now})
        audit_append(
            event_type="beta_allowlist_add", payload={"address": address}, correlation_id=address, now=now, actor=actor
        )
        _forget(_allowlist_key(address))
    return entry


def allowlist_remove(*, address: str, actor: str, now: datetime) -> bool:
    address = address.lower()
    with transaction.atomic():  # not durable: the admin's change view already holds a transaction
        removed, _ = BetaAllowlistEntry.objects.filter(address=address).delete()
        if removed:
            audit_append(
                event_type="beta_allowlist_remove",
                payload={"address": address},
                correlation_id=address,
                now=now,
                actor=actor,
            )
        _forget(_allowlist_key(address))
    return bool(removed)
