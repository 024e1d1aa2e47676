from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _seed_prices(sender: Any, using: str = "default", **kwargs: Any) -> None:
    """After migrate (and the test runner's flush): configured models without a price get one."""
    from django.db import connections

    from credits.pricing import pricing_seed

    if "credits_modelpriceversion" in connections[using].introspection.table_names():
        pricing_seed()


class CreditsConfig(AppConfig):
    name = "credits"
    verbose_name = "Credits and API keys"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from credits.x402 import settle  # noqa: F401  (registers the settlement breaker)

        post_migrate.connect(_seed_prices, sender=self, dispatch_uid="credits_seed_prices")
