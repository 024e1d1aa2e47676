"""Celery tasks of the credits app."""

from __future__ import annotations

import logging

from celery import shared_task

from credits.metrics import nonce_cleanup_failures_total, nonce_cleanup_last_success
from credits.purchases import purchase_reorg_check
from credits.services import nonce_cleanup
from credits.x402.credit_notes import credit_notes_expire
from credits.x402.payments import x402_settlements_resolve
from finn import clock

logger = logging.getLogger(__name__)


@shared_task(name="credits.tasks.nonce_cleanup_task")
def nonce_cleanup_task() -> str:
    """Hourly cleanup; a failure is logged and counted, and the next run tries again."""
    try:
        result = nonce_cleanup(now=clock.now())
    except Exception:
        nonce_cleanup_failures_total.inc()
        logger.exception("nonce cleanup failed")
        return "nonce cleanup failed"
    nonce_cleanup_last_success.set(clock.time())
    logger.info("nonce cleanup", extra={"deleted": result.deleted, "seconds": round(result.seconds, 3)})
    return f"deleted {result.deleted} used nonces in {result.seconds:.3f} s"


@shared_task(name="credits.tasks.purchase_reorg_check_task")
def purchase_reorg_check_task() -> str:
    return f"reorg check: {purchase_reorg_check(now=clock.now())}"


@shared_task(name="credits.tasks.credit_notes_expire_task")
def credit_notes_expire_task() -> str:
    """Hourly: what is left of credit notes older than 7 days returns to revenue."""
    return f"expired {credit_notes_expire(now=clock.now())} credit notes"


@shared_task(name="credits.tasks.x402_settlements_resolve_task")
def x402_settlements_resolve_task() -> str:
    """Every 30 s: x402 settlements whose answer was lost, resolved (a lease per payment: two runs at once are safe)."""
    return f"x402 settlements: {x402_settlements_resolve(now=clock.now())}"
