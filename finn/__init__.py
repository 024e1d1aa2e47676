"""finn: project wiring and the shared mechanisms every app reuses."""

from __future__ import annotations

from finn.celery import app as celery_app

__all__ = ["celery_app"]
