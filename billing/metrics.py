"""Prometheus metrics of the billing app (declared once, here)."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from datetime import datetime
from typing import ParamSpec, TypeVar

from prometheus_client import Counter, Gauge, Histogram

from finn.errors import DomainError

P = ParamSpec("P")
R = TypeVar("R")

operations_total = Counter(
    "billing_ops_total",
    "Billing service calls by operation and status (ok or the error code).",
    ["op", "status"],
)
op_duration_seconds = Histogram(
    "billing_op_duration_seconds",
    "Duration of billing service calls.",
    ["op"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
rejected_total = Counter(
    "billing_rejected_total",
    "Refused billing work by reason (insufficient_funds, cap_reached, hold_expired, lock_contention, ...).",
    ["reason"],
)
# Error codes whose reason has another name on the dashboards.
_REASONS = {"daily_cap_exceeded": "cap_reached", "idempotency_mismatch": "idempotency_conflict"}


def rejected(reason: str) -> None:
    rejected_total.labels(_REASONS.get(reason, reason)).inc()


holds_open = Gauge("billing_holds_open", "Open holds (RESERVE_HELD).", multiprocess_mode="mostrecent")
hold_age_seconds = Gauge("billing_hold_age_seconds", "Age of the oldest open hold.", multiprocess_mode="mostrecent")
finalize_pending = Gauge(
    "billing_finalize_pending", "Entries waiting to be finalized upstream.", multiprocess_mode="mostrecent"
)
finalize_poison = Gauge("billing_finalize_poison", "Poison entries (FINALIZE_FAILED).", multiprocess_mode="mostrecent")
balance_cache_write_failures_total = Counter(
    "finn_billing_balance_cache_write_failures_total",
    "Balance cache writes to Redis that failed (the ledger is unaffected).",
)
fencing_stale_total = Counter(
    "billing_fencing_stale_total",
    "Locked writes refused because their fencing token was stale.",
)
finalize_attempts_total = Counter(
    "finn_billing_finalize_attempts_total",
    "Finalize attempts by outcome.",
    ["outcome"],
)
finalize_escalations_total = Counter(
    "finn_billing_finalize_escalations_total",
    "Poison entries (FINALIZE_FAILED) escalated after the escalation window.",
)
hold_expiry_released_total = Counter(
    "billing_holds_expired_total",
    "Expired holds released by the sweeper.",
)
balance_drift_total = Counter(
    "balance_drift_total",
    "Sum of |delta| (µUSD) between the Redis balance cache and the ledger, found by reconciliation.",
)
reconciliation_divergences = Gauge(
    "finn_billing_reconciliation_divergences",
    "Divergences found by the last reconciliation run.",
    multiprocess_mode="mostrecent",
)
reconciliation_drift_alert = Gauge(
    "finn_billing_reconciliation_drift_alert",
    "1 when the last reconciliation run found more drift than RECONCILIATION_DRIFT_ALERT_MICRO_USD.",
    multiprocess_mode="mostrecent",
)
finalize_pending_entries = Gauge(
    "finn_billing_finalize_pending_entries",
    "Entries waiting to be finalized upstream (pending reconciliation count).",
    multiprocess_mode="mostrecent",
)
daily_cap_applied_total = Counter(
    "finn_billing_daily_cap_applied_total",
    "Commits whose actual cost was capped to what the agent's daily cap still allowed.",
)
low_balance_events_total = Counter(
    "finn_billing_low_balance_events_total", "wallet.low_balance events (once per wallet per day)."
)
ledger_check_ok = Gauge(
    "ledger_check_ok",
    "1 when the last scheduled ledger check passed, 0 when it failed.",
    multiprocess_mode="mostrecent",
)
ledger_check_last_run = Gauge(
    "ledger_check_last_run_timestamp_seconds", "When the scheduled ledger check last ran.", multiprocess_mode="max"
)
ledger_check_failures_total = Counter(
    "finn_billing_ledger_check_failures_total",
    "Ledger checks that found an unbalanced journal or a balance row off its postings.",
)


def counted(operation: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Count calls of a service by outcome: ``ok`` or the domain error code."""

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            started = time.perf_counter()
            try:
                result = func(*args, **kwargs)
            except DomainError as exc:
                operations_total.labels(operation, exc.code).inc()
                rejected(exc.code)
                raise
            finally:
                op_duration_seconds.labels(operation).observe(time.perf_counter() - started)
            operations_total.labels(operation, "ok").inc()
            return result

        return wrapper

    return decorate


def ledger_gauges_set(*, holds: int, oldest_hold: datetime | None, pending: int, poison: int, now: datetime) -> str:
    """Set the ledger gauges (billing.selectors.open_entries' figures; gauges are multiprocess)."""
    holds_open.set(holds)
    hold_age_seconds.set(max(0.0, (now - oldest_hold).total_seconds()) if oldest_hold else 0.0)
    finalize_pending.set(pending)
    finalize_poison.set(poison)
    return f"holds {holds}, pending {pending}, poison {poison}"
