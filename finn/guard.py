"""The runtime conservation guard: named invariants checked inside each money operation.

``guard(name, holds, **context)`` runs in the operation's own transaction. A violation is
counted (``conservation_guard_violations_total{invariant}``), logged, and aborts the
operation with 409 ``invariant_violation`` — the transaction rolls back, nothing is written.
Break glass: ``FINN_GUARD_BYPASS=true`` (with ``FINN_GUARD_BYPASS_BY`` naming who) lets
operations through while every invariant is still evaluated, counted and logged; each
process announces it at CRITICAL and records it once in the audit log (who, when).
State gauge ``conservation_guard_state{state}``: ready, degraded (the last ledger check
failed), bypassed.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from django.conf import settings
from prometheus_client import Counter, Gauge

from finn import clock
from finn.errors import Conflict

logger = logging.getLogger(__name__)

STATES = ("ready", "degraded", "bypassed")
guard_state = Gauge(
    "conservation_guard_state",
    "Conservation guard state: 1 on the current one of ready, degraded, bypassed.",
    ["state"],
    multiprocess_mode="mostrecent",
)
violations_total = Counter(
    "conservation_guard_violations_total", "Money-operation invariants found violated, by invariant.", ["invariant"]
)


class InvariantViolation(Conflict):
    code = "invariant_violation"


_announced = threading.Event()


def guard_state_set(state: str) -> None:
    for name in STATES:
        guard_state.labels(name).set(1 if name == state else 0)


def guard_bypass_record() -> None:
    """Record the bypass in the audit log now (the ledger-check task calls it every run)."""
    _announced.clear()
    _bypass_announce()


def _bypass_announce() -> None:
    """Once per process: CRITICAL log and an audit record of who turned the bypass on."""
    if _announced.is_set():
        return
    from finn.audit import audit_append

    who = settings.FINN_GUARD_BYPASS_BY
    logger.critical("conservation guard BYPASSED (break glass)", extra={"by": who})
    guard_state_set("bypassed")
    audit_append(
        event_type="conservation_guard_bypass",
        payload={"by": who, "since": clock.now().isoformat()},
        correlation_id="conservation_guard",
        now=clock.now(),
        actor=who,
        reason="FINN_GUARD_BYPASS=true",
    )
    # Once per process. Should this operation roll back, the CRITICAL line remains and the
    # scheduled ledger check records the bypass again in its own transaction.
    _announced.set()


def guard(invariant: str, holds: bool, **context: Any) -> None:
    """Check one named invariant inside the current money operation."""
    bypass = bool(settings.FINN_GUARD_BYPASS)
    if bypass:
        _bypass_announce()
    if holds:
        return
    violations_total.labels(invariant).inc()
    details = {k: str(v) for k, v in context.items()}
    logger.error("conservation invariant violated", extra={"invariant": invariant, "bypassed": bypass, **details})
    if not bypass:
        raise InvariantViolation(f"this operation would break the invariant {invariant}", invariant=invariant)
