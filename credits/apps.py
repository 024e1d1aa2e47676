from __future__ import annotations

from django.apps import AppConfig


class CreditsConfig(AppConfig):
    name = "credits"
    verbose_name = "Credits and API keys"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from credits.x402 import settle  # noqa: F401  (registers the settlement breaker)
