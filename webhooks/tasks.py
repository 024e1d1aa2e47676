"""Celery tasks of the webhooks app."""

from __future__ import annotations

from celery import shared_task

from finn import clock
from webhooks.services import webhook_enqueue, webhook_process, webhook_sweep

RETRY_LATER = {"lock_contention": 5, "deferred": 2}


@shared_task(name="webhooks.tasks.webhook_process_task", acks_late=True)
def webhook_process_task(event_pk: int) -> str:
    outcome = webhook_process(event_pk=event_pk)
    if outcome in RETRY_LATER:
        webhook_enqueue(event_pk, countdown=RETRY_LATER[outcome])
    return f"{event_pk}: {outcome}"


@shared_task(name="webhooks.tasks.webhook_sweep_task")
def webhook_sweep_task() -> str:
    return f"re-enqueued {webhook_sweep(now=clock.now())} webhook events"
