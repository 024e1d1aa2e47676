"""Celery tasks of the billing app (each calls one service or selector)."""

from __future__ import annotations

import logging

from celery import shared_task

from billing.metrics import ledger_check_failures_total
from billing.selectors import ledger_check

logger = logging.getLogger(__name__)


@shared_task(name="billing.tasks.ledger_check_task")
def ledger_check_task() -> str:
    """Run the ledger check; log at ERROR and count a failure so alerts fire."""
    report = ledger_check()
    summary = report.lines()[0] + ("; OK" if report.ok else "; FAILED")
    if not report.ok:
        ledger_check_failures_total.inc()
        logger.error("ledger check failed", extra={"problems": report.lines()[1:-1]})
    return summary
