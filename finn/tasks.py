"""Celery tasks of the shared mechanisms."""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from finn.idempotency import idempotency_key_cleanup


@shared_task(name="finn.tasks.idempotency_key_cleanup_task")
def idempotency_key_cleanup_task() -> str:
    deleted = idempotency_key_cleanup(now=timezone.now())
    return f"deleted {deleted} expired idempotency keys"
