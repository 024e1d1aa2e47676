"""Prometheus metrics of the billing app (declared once, here)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from prometheus_client import Counter, Gauge

from finn.errors import DomainError

P = ParamSpec("P")
R = TypeVar("R")

operations_total = Counter(
    "finn_billing_operations_total",
    "Billing service calls by operation and outcome (ok or the error code).",
    ["operation", "outcome"],
)
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
    "finn_billing_hold_expiry_released_total",
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
ledger_check_failures_total = Counter(
    "finn_billing_ledger_check_failures_total",
    "Ledger checks that found an unbalanced journal or a balance row off its postings.",
)


def counted(operation: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Count calls of a service by outcome: ``ok`` or the domain error code."""

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                result = func(*args, **kwargs)
            except DomainError as exc:
                operations_total.labels(operation, exc.code).inc()
                raise
            operations_total.labels(operation, "ok").inc()
            return result

        return wrapper

    return decorate
