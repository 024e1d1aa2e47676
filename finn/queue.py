"""Enqueue a Celery task by its registered name: the one way services schedule work.

Services never import a ``tasks`` module (tasks import services), so they send by
name through the app. Every queue's truth is a row: a broker failure is logged
and counted as "not sent", and the owning sweeper finds the row later.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction

from finn.celery import app

logger = logging.getLogger(__name__)


def task_send(name: str, *, args: tuple[Any, ...] = (), countdown: float = 0, expires: float | None = None) -> bool:
    """Send ``name`` now; False (logged) when the broker refuses it."""
    try:
        app.send_task(name, args=args, countdown=countdown, expires=expires, retry=False)
    except Exception as exc:  # kombu/redis errors of any kind: the row is the queue
        logger.warning("task enqueue failed", extra={"task": name, "args": list(args), "error": type(exc).__name__})
        return False
    return True


def task_enqueue(
    name: str,
    *,
    args: tuple[Any, ...] = (),
    countdown: float = 0,
    expires: float | None = None,
    on_commit: bool = True,
) -> None:
    """Send ``name`` once the current transaction commits (or now, with ``on_commit=False``)."""
    if on_commit:
        transaction.on_commit(lambda: task_send(name, args=args, countdown=countdown, expires=expires))
    else:
        task_send(name, args=args, countdown=countdown, expires=expires)
