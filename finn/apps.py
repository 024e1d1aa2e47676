from __future__ import annotations

from django.apps import AppConfig


class FinnConfig(AppConfig):
    name = "finn"
    verbose_name = "finn (shared mechanisms)"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers the schema extensions of finn's strict fields with drf-spectacular.
        import finn.openapi  # noqa: F401
