"""Reconcile the Redis balance cache with the ledger (PostgreSQL is the truth).

One run at a time (advisory lock). For each account, in batches: read the
balance rows and the cached hashes (one pipeline), and for every divergence
first append a ``RECONCILIATION_CORRECTION`` audit record (committed), then
repair Redis with a compare-and-set script that only overwrites the value
the run observed — if an on_commit write landed meanwhile it is newer than
the run's read, so it is kept. A summary audit record closes the run.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
from django.conf import settings
from django.db import transaction
from ulid import ULID

from billing.cache import BALANCE_CACHE_TTL_SECONDS, balance_cache_key, daily_cache_read, daily_cache_set
from billing.metrics import balance_drift_total, reconciliation_divergences, reconciliation_drift_alert
from billing.models import Account, AccountKind, DailySpend
from finn.audit import AuditRecord, audit_append, audit_append_many
from finn.locks import Job, Lease, job_lease
from finn.redis import get_redis, register_script, run_script

logger = logging.getLogger(__name__)


_REPAIR = register_script(
    "balance_cache_repair",
    """
local kind = redis.call('TYPE', KEYS[1])['ok']
local observed
if kind == 'none' then
  observed = ''
elseif kind ~= 'hash' then
  observed = 'WRONGTYPE'
else
  local cur = redis.call('HMGET', KEYS[1], 'version', 'available', 'held')
  observed = (cur[1] or '') .. '|' .. (cur[2] or '') .. '|' .. (cur[3] or '')
end
if observed ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'version', ARGV[2], 'available', ARGV[3], 'held', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
""",
)


@dataclass(frozen=True)
class ReconciliationResult:
    run_id: str
    accounts_checked: int
    divergences_found: int
    divergences_corrected: int
    total_drift: int
    drift_threshold_exceeded: bool
    duration_ms: int


def _observed(raw: Any) -> tuple[str, dict[str, str] | None]:
    """The script's view of a cached value, and the parsed hash (None if unusable)."""
    if isinstance(raw, Exception):
        return "WRONGTYPE", None
    if not raw:
        return "", None
    fingerprint = f"{raw.get('version', '')}|{raw.get('available', '')}|{raw.get('held', '')}"
    return fingerprint, raw


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def reconciliation_run(*, now: datetime, batch_size: int = 1000) -> ReconciliationResult | None:
    """Compare every account's cached balances with its ledger row; repair and audit."""
    with job_lease(Job.RECONCILIATION) as lease:
        if lease is None:
            return None
        return _run(now=now, batch_size=batch_size, lease=lease)


def _reconcile_daily(*, now: datetime, run_id: str) -> tuple[int, int]:
    """Today's agent daily-spend cache against its PostgreSQL rows (audit, then repair)."""
    day = now.astimezone(UTC).date()
    rows = list(DailySpend.objects.filter(day=day).values_list("account_id", "spent", "held"))
    divergent = []
    for account_id, spent, held in rows:
        cached = daily_cache_read(account_id, day)
        if cached != {"spent": spent, "held": held}:
            divergent.append((account_id, spent, held, cached))
    if not divergent:
        return 0, 0
    with transaction.atomic(durable=True):
        audit_append_many(
            [
                AuditRecord(
                    event_type="billing_reconciliation",
                    payload={
                        "correction_type": "RECONCILIATION_CORRECTION",
                        "kind": "agent_daily_spend",
                        "account": str(account_id),
                        "day": day.isoformat(),
                        "derived_balance": {"spent": str(spent), "held": str(held)},
                        "cached_balance": None if cached is None else {k: str(v) for k, v in cached.items()},
                        "reconciliation_run_id": run_id,
                        "timestamp": now.isoformat(),
                    },
                    correlation_id=run_id,
                    account_id=account_id,
                    actor="reconciliation",
                )
                for account_id, spent, held, cached in divergent
            ],
            now=now,
        )
    corrected = 0
    for account_id, spent, held, _ in divergent:
        try:
            daily_cache_set(account_id=account_id, day=day, spent=spent, held=held)
            corrected += 1
        except (redis.RedisError, OSError):
            logger.warning("daily cache repair failed", extra={"account_id": account_id})
    return len(divergent), corrected


def _run(*, now: datetime, batch_size: int, lease: Lease) -> ReconciliationResult:
    started = time.monotonic()
    run_id = f"recon-{ULID()}"
    client = get_redis()
    checked = found = corrected = drift = 0
    last_pk = 0
    while True:
        rows = list(
            Account.objects.filter(pk__gt=last_pk)
            .exclude(kind=AccountKind.SYSTEM)
            .order_by("pk")
            .values_list("pk", "available", "held", "version")[:batch_size]
        )
        if not rows or not lease.renew():  # a run that lost its lease stops: one run at a time
            break
        last_pk = rows[-1][0]
        pipe = client.pipeline(transaction=False)
        for pk, *_ in rows:
            pipe.hgetall(balance_cache_key(pk))
        cached_values = pipe.execute(raise_on_error=False)
        checked += len(rows)
        divergent = []
        for (pk, available, held, version), raw in zip(rows, cached_values, strict=True):
            fingerprint, cached = _observed(raw)
            cached_available = _int_or_none(cached.get("available")) if cached else None
            cached_held = _int_or_none(cached.get("held")) if cached else None
            if cached_available == available and cached_held == held:
                continue
            delta_available = available - (cached_available or 0)
            delta_held = held - (cached_held or 0)
            if cached is not None:  # a missing key is a cache miss, not drift
                drift += abs(delta_available) + abs(delta_held)
            divergent.append((pk, available, held, version, fingerprint, cached_available, cached_held))
        found += len(divergent)
        if not divergent:
            continue
        with transaction.atomic(durable=True):
            audit_append_many(
                [
                    AuditRecord(
                        event_type="billing_reconciliation",
                        payload={
                            "correction_type": "RECONCILIATION_CORRECTION",
                            "account": str(pk),
                            "derived_balance": {"available": str(available), "held": str(held)},
                            "cached_balance": {
                                "available": None if c_avail is None else str(c_avail),
                                "held": None if c_held is None else str(c_held),
                            },
                            "delta": {
                                "available": str(available - (c_avail or 0)),
                                "held": str(held - (c_held or 0)),
                            },
                            "reconciliation_run_id": run_id,
                            "timestamp": now.isoformat(),
                        },
                        correlation_id=run_id,
                        account_id=pk,
                        actor="reconciliation",
                    )
                    for pk, available, held, _, _, c_avail, c_held in divergent
                ],
                now=now,
            )
        for pk, available, held, version, fingerprint, _, _ in divergent:
            try:
                if run_script(
                    _REPAIR,
                    [balance_cache_key(pk)],
                    [fingerprint, version, available, held, BALANCE_CACHE_TTL_SECONDS],
                ):
                    corrected += 1
            except (redis.RedisError, OSError):
                logger.warning("reconciliation repair failed", extra={"account_id": pk})
    daily_found, daily_corrected = _reconcile_daily(now=now, run_id=run_id)
    found += daily_found
    corrected += daily_corrected
    exceeded = drift > settings.RECONCILIATION_DRIFT_ALERT_MICRO_USD
    duration_ms = int((time.monotonic() - started) * 1000)
    with transaction.atomic(durable=True):
        audit_append(
            event_type="billing_reconciliation",
            payload={
                "reconciliation_run_id": run_id,
                "accounts_checked": checked,
                "divergences_found": found,
                "divergences_corrected": corrected,
                "total_rounding_drift": str(drift),
                "drift_threshold_exceeded": exceeded,
                "duration_ms": duration_ms,
                "timestamp": now.isoformat(),
            },
            correlation_id=run_id,
            now=now,
            actor="reconciliation",
        )
    balance_drift_total.inc(drift)
    reconciliation_divergences.set(found)
    reconciliation_drift_alert.set(1 if exceeded else 0)
    if exceeded:
        logger.error("reconciliation drift above threshold", extra={"run_id": run_id, "drift_micro_usd": drift})
    result = ReconciliationResult(
        run_id=run_id,
        accounts_checked=checked,
        divergences_found=found,
        divergences_corrected=corrected,
        total_drift=drift,
        drift_threshold_exceeded=exceeded,
        duration_ms=duration_ms,
    )
    logger.info("reconciliation run", extra={"run_id": run_id, "checked": checked, "divergences": found})
    return result
