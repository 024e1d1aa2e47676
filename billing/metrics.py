"""Prometheus metrics of the billing app (declared once, here)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from prometheus_client import Counter

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
