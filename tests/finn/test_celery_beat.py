"""Every beat entry names a registered task and carries `expires`."""

from __future__ import annotations

from django.conf import settings

from finn.celery import app


def test_beat_entries_are_registered_tasks_with_expiry() -> None:
    # given
    app.loader.import_default_modules()
    # then
    assert settings.CELERY_BEAT_SCHEDULE
    for name, entry in settings.CELERY_BEAT_SCHEDULE.items():
        assert entry["task"] in app.tasks, name
        assert entry["options"]["expires"] > 0, name
