"""Celery tasks of the billing app: each takes ids, calls one service, returns a summary."""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings
from django.db import connection, transaction

from billing.finalize import entry_finalize_attempt, finalize_bulk_replay, finalize_escalate, finalize_sweep
from billing.metrics import ledger_check_failures_total, ledger_check_last_run, ledger_check_ok, ledger_gauges_set
from billing.outbound_delivery import deliveries_sweep, delivery_attempt
from billing.reconciliation import reconciliation_run
from billing.selectors import ledger_check, open_entries
from billing.services import holds_expire, ledger_check_record, ledger_snapshot_record
from finn import clock
from finn.guard import guard_bypass_record, guard_state_set
from finn.locks import Job, job_lease

logger = logging.getLogger(__name__)
LEDGER_CHECK_TIMEOUT_SECONDS = 300  # bounded: a runaway check must not hold a connection for long


@shared_task(name="billing.tasks.ledger_check_task")
def ledger_check_task() -> str:
    """Every 10 minutes: the ledger check, one at a time, bounded; its result is exported.

    A failure logs at ERROR, counts, sets ``ledger_check_ok`` to 0 (an alert rule fires) and
    marks the conservation guard ``degraded``; a pass sets it back to ``ready``.
    """

    with job_lease(Job.LEDGER_CHECK) as lease:
        if lease is None:
            return "ledger check: another run is in progress"
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT set_config('statement_timeout', %s, true)", [f"{LEDGER_CHECK_TIMEOUT_SECONDS}s"])
            report = ledger_check()
    summary = report.lines()[0] + ("; OK" if report.ok else "; FAILED")
    ledger_check_record(ok=report.ok, summary=summary, problems=report.lines()[1:-1], now=clock.now())
    ledger_check_ok.set(1 if report.ok else 0)
    ledger_check_last_run.set(clock.time())
    if not report.ok:
        ledger_check_failures_total.inc()
        logger.error("ledger check failed", extra={"problems": report.lines()[1:-1]})
    if settings.FINN_GUARD_BYPASS:
        with transaction.atomic():
            guard_bypass_record()  # still on: say so in the audit log, every run
    else:
        guard_state_set("ready" if report.ok else "degraded")
    return summary


@shared_task(name="billing.tasks.entry_finalize_task", acks_late=True)
def entry_finalize_task(entry_id: str, replay: bool = False) -> str:
    return f"{entry_id}: {entry_finalize_attempt(entry_id=entry_id, replay=replay)}"


@shared_task(name="billing.tasks.finalize_sweep_task")
def finalize_sweep_task() -> str:
    result = finalize_sweep(now=clock.now())
    return f"enqueued {result.enqueued}, pending {result.pending}"


@shared_task(name="billing.tasks.finalize_escalation_task")
def finalize_escalation_task() -> str:
    return f"escalated {finalize_escalate(now=clock.now())}"


@shared_task(name="billing.tasks.finalize_bulk_replay_task")
def finalize_bulk_replay_task(concurrency: int, limit: int) -> str:
    return f"replayed: {finalize_bulk_replay(concurrency=concurrency, limit=limit)}"


@shared_task(name="billing.tasks.hold_expiry_sweep_task")
def hold_expiry_sweep_task() -> str:
    return f"released {holds_expire(now=clock.now())} expired holds"


@shared_task(name="billing.tasks.reconciliation_task")
def reconciliation_task() -> str:
    result = reconciliation_run(now=clock.now())
    if result is None:
        return "another reconciliation run holds the lock"
    return f"{result.run_id}: checked {result.accounts_checked}, divergences {result.divergences_found}"


@shared_task(name="billing.tasks.metrics_refresh_task")
def metrics_refresh_task() -> str:
    """Every 30 s: the ledger gauges (open holds, oldest hold, finalize pending/poison) from PostgreSQL,
    and every five minutes the dashboard's snapshot of open holds."""
    now, figures = clock.now(), open_entries()
    summary = ledger_gauges_set(
        holds=figures.holds, oldest_hold=figures.oldest_hold, pending=figures.finalize_pending,
        poison=figures.finalize_failed, now=now,
    )  # fmt: skip
    return summary + ("; snapshot" if ledger_snapshot_record(now=now) else "")


@shared_task(name="billing.tasks.outbound_delivery_task", acks_late=True)
def outbound_delivery_task(delivery_id: int) -> str:
    return f"delivery {delivery_id}: {delivery_attempt(delivery_id)}"


@shared_task(name="billing.tasks.outbound_sweep_task")
def outbound_sweep_task() -> str:
    """Every 5 s: send due outbound webhooks (safe twice at once: each delivery is claimed SKIP LOCKED)."""
    return f"sent {deliveries_sweep(now=clock.now())}"
