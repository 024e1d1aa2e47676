"""The Celery application: Redis broker, settings from Django (CELERY_*)."""

from __future__ import annotations

import os
from datetime import datetime

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "finn.settings")


class FinnCelery(Celery):
    """Beat schedules, countdowns and ETAs on finn's clock (the database's), not the host's.

    Celery's own ``now()`` is the wall clock: a host clock stepped back an hour would hold
    every beat job (the hold-expiry sweep included) for that hour, and one stepped forward
    would run ETAs early; on finn's clock neither happens (``finn.clock``).
    """

    def now(self) -> datetime:
        from finn import clock

        return clock.now(allow_wall=True).astimezone(self.timezone)


app = FinnCelery("finn")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


# Tracing (finn.tracing; nothing happens unless OTEL_ENABLED=true): set up after the fork,
# and each task continues the trace of whoever published it.
from typing import Any  # noqa: E402

from celery.signals import before_task_publish, task_postrun, task_prerun, worker_process_init  # noqa: E402


@worker_process_init.connect
def _tracing_after_fork(**kwargs: Any) -> None:
    from finn.tracing import tracing_init

    tracing_init()


@before_task_publish.connect
def _tracing_inject(headers: dict[str, Any] | None = None, **kwargs: Any) -> None:
    from finn.tracing import celery_inject

    if headers is not None:
        celery_inject(headers)


@task_prerun.connect
def _tracing_task_start(task_id: str = "", task: Any = None, **kwargs: Any) -> None:
    from finn.tracing import celery_task_start

    request = getattr(task, "request", None)
    headers = dict(getattr(request, "headers", None) or {})
    headers.update({k: v for k, v in vars(request).items() if k in ("traceparent", "tracestate")} if request else {})
    celery_task_start(task_id, getattr(task, "name", "task"), headers)


@task_postrun.connect
def _tracing_task_end(task_id: str = "", **kwargs: Any) -> None:
    from finn.tracing import celery_task_end

    celery_task_end(task_id)
