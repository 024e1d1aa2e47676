from __future__ import annotations

from django.apps import AppConfig


class FinnConfig(AppConfig):
    name = "finn"
    verbose_name = "finn (shared mechanisms)"
    default_auto_field = "django.db.models.BigAutoField"
