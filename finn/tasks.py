"""Celery tasks of the shared mechanisms."""

from __future__ import annotations

from celery import shared_task

from finn import clock
from finn.audit_chain import audit_chain
from finn.idempotency import idempotency_key_cleanup


@shared_task(name="finn.tasks.idempotency_key_cleanup_task")
def idempotency_key_cleanup_task() -> str:
    deleted = idempotency_key_cleanup(now=clock.now())
    return f"deleted {deleted} expired idempotency keys"


# The audit log is finn's table, so its chain task lives here; the registered name is kept
# from when it lived in billing (beat schedules and running workers know it by that name).
@shared_task(name="billing.tasks.audit_chain_task")
def audit_chain_task() -> str:
    return f"chained {audit_chain()} audit records"
