"""Celery beat's schedule (settings.CELERY_BEAT_SCHEDULE).

The schedule is static: each entry says why it runs when it does, and carries ``expires``
so a backlog after an outage does not run stale copies. Every job is safe to run twice at
once (README "Two nodes").
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from celery.schedules import crontab


def beat_schedule(*, reconciliation_interval_seconds: int) -> dict[str, dict[str, Any]]:
    return {
        # Proves the ledger balances (zero-sum journals, balance rows equal to
        # their postings) every 10 minutes; a failure is logged at ERROR and
        # counted, so an alert fires long before a customer notices.
        "ledger-check": {
            "task": "billing.tasks.ledger_check_task",
            "schedule": timedelta(minutes=10),
            "options": {"expires": 10 * 60},
        },
        # Holds must be released within seconds of expiry; each run drains every
        # expired hold in batches, so a 1 s schedule keeps the lag near 1 s.
        "hold-expiry-sweep": {
            "task": "billing.tasks.hold_expiry_sweep_task",
            "schedule": timedelta(seconds=1),
            "options": {"expires": 5},
        },
        # The entries table is the finalize queue: re-enqueue attempts whose
        # broker message was lost (or whose worker died) a few seconds late.
        "finalize-sweep": {
            "task": "billing.tasks.finalize_sweep_task",
            "schedule": timedelta(seconds=5),
            "options": {"expires": 10},
        },
        # Poison older than 24 h escalates once; checking every 5 minutes keeps
        # the alert within minutes of the deadline.
        "finalize-escalation": {
            "task": "billing.tasks.finalize_escalation_task",
            "schedule": timedelta(minutes=5),
            "options": {"expires": 4 * 60},
        },
        # Redis balance cache against the ledger; corrections are audited first.
        "reconciliation": {
            "task": "billing.tasks.reconciliation_task",
            "schedule": timedelta(seconds=reconciliation_interval_seconds),
            "options": {"expires": reconciliation_interval_seconds},
        },
        # Ledger gauges (open holds, oldest hold, finalize pending/poison) for dashboards and alerts.
        "metrics-refresh": {
            "task": "billing.tasks.metrics_refresh_task",
            "schedule": timedelta(seconds=30),
            "options": {"expires": 30},
        },
        # Hash-chains new audit records in batches so writers never serialize.
        "audit-chain": {
            "task": "billing.tasks.audit_chain_task",
            "schedule": timedelta(seconds=10),
            "options": {"expires": 10},
        },
        # Used nonces only matter while their authorizations could be replayed;
        # hourly at :30, clear of the :17 idempotency cleanup.
        "nonce-cleanup": {
            "task": "credits.tasks.nonce_cleanup_task",
            "schedule": crontab(minute=30),
            "options": {"expires": 30 * 60},
        },
        # x402 credit notes expire after 7 days; their remainder returns to revenue.
        "credit-notes-expire": {
            "task": "credits.tasks.credit_notes_expire_task",
            "schedule": crontab(minute=40),
            "options": {"expires": 30 * 60},
        },
        # x402 settlements whose outcome is unknown: asked of the chain / the facilitator again.
        "x402-settlements-resolve": {
            "task": "credits.tasks.x402_settlements_resolve_task",
            "schedule": timedelta(seconds=30),
            "options": {"expires": 30},
        },
        # Mints younger than an hour are re-checked for chain reorganisations.
        "purchase-reorg-check": {
            "task": "credits.tasks.purchase_reorg_check_task",
            "schedule": timedelta(minutes=5),
            "options": {"expires": 4 * 60},
        },
        # Outbound webhooks are rows too: send the due ones (retries, lost wake-ups).
        "outbound-webhook-sweep": {
            "task": "billing.tasks.outbound_sweep_task",
            "schedule": timedelta(seconds=5),
            "options": {"expires": 5},
        },
        # Webhook events are rows: re-enqueue any whose wake-up was lost.
        "webhook-sweep": {
            "task": "webhooks.tasks.webhook_sweep_task",
            "schedule": timedelta(seconds=30),
            "options": {"expires": 30},
        },
        # Idempotency keys are only useful for client retries within a day;
        # hourly trimming keeps the table small without racing live requests.
        "idempotency-key-cleanup": {
            "task": "finn.tasks.idempotency_key_cleanup_task",
            "schedule": crontab(minute=17),
            "options": {"expires": 30 * 60},
        },
    }
