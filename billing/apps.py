from __future__ import annotations

from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Billing ledger"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Register what shared tooling asks for by name (finn.registry): the finalize
        # breaker (registered when billing.finalize is imported) and the ledger check.
        from billing import finalize  # noqa: F401
        from billing.selectors import ledger_check
        from finn.registry import CheckResult, check_register

        def ledger() -> CheckResult:
            report = ledger_check()
            return CheckResult(ok=report.ok, summary="; ".join(report.lines()))

        check_register("ledger", ledger)

        from billing.dashboard import register as dashboard_register

        dashboard_register()
