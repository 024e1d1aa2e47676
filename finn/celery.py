"""The Celery application: Redis broker, settings from Django (CELERY_*)."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "finn.settings")

app = Celery("finn")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
