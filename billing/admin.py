"""The ledger in the admin, for finance staff: read-only, with finalize/void actions.

Ledger models have no add, change or delete. State changes happen only through
actions that ask for a reason on a confirmation page and call the billing
services (which audit the actor and the reason). Lists stay fast on large tables:
selected relations, no full result count, a capped paginator.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse

from billing import selectors, services
from billing.models import (
    Account,
    BadgePurchase,
    BillingEntry,
    BoostPurchase,
    DailySpend,
    FinalizeDeadLetter,
    JournalEntry,
    Posting,
    Subscription,
)
from billing.states import EntryState
from finn import clock
from finn.admin_base import ConfirmRow, ReadOnlyAdmin, confirm_with_reason


@admin.register(Account)
class AccountAdmin(ReadOnlyAdmin[Account]):
    list_display = ["id", "kind", "code", "owner", "available", "held", "credit_limit", "daily_cap"]
    list_filter = ["kind"]
    list_select_related = ["owner"]
    search_fields = ["code", "name", "owner__username"]
    readonly_fields = ["spent_today", "open_holds", "last_reconciliation"]

    def _overview(self, obj: Account) -> selectors.AccountOverview:
        return selectors.account_overview(account_id=obj.pk, now=clock.now())

    @admin.display(description="Spent today (µUSD, UTC day)")
    def spent_today(self, obj: Account) -> str:
        overview = self._overview(obj)
        return f"{overview.spent_today} spent, {overview.held_today} held"

    @admin.display(description="Open holds")
    def open_holds(self, obj: Account) -> str:
        overview = self._overview(obj)
        return f"{overview.open_holds} holds, {overview.open_holds_amount} µUSD"

    @admin.display(description="Last reconciliation")
    def last_reconciliation(self, obj: Account) -> str:
        last = self._overview(obj).last_reconciliation
        if last is None:
            return "never run"
        payload = last["payload"]
        return (
            f"{last['created_at']:%Y-%m-%d %H:%M:%S} UTC: {payload.get('accounts_checked')} checked, "
            f"{payload.get('divergences_found')} divergent, {payload.get('divergences_corrected')} corrected"
        )


class AccountIdFilter(admin.SimpleListFilter):
    """``?account=<id>`` (linked from an account's entries); no list of every account on big tables."""

    title = "account"
    parameter_name = "account"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        value = self.value()
        return [(value, f"account {value}")] if value and value.isdigit() else []

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(account_id=int(value)) if value and value.isdigit() else queryset


class EntryActionsMixin(ReadOnlyAdmin[BillingEntry]):
    """Finalize, void and replay: second factor, a confirmation page and a required reason."""

    HEADERS = ["entry", "account", "state", "estimate (µUSD)", "actual (µUSD)"]

    def _confirm(
        self,
        request: HttpRequest,
        queryset: QuerySet[BillingEntry],
        *,
        action: str,
        permission: str,
        title: str,
        explanation: str,
        outcome: str,
        sources: set[str],
        submit_label: str,
        apply: Callable[[BillingEntry, str], object],
    ) -> HttpResponse | None:
        def row(entry: BillingEntry) -> ConfirmRow:
            cells = [entry.pk, entry.account_id, entry.state, entry.estimated_cost, entry.actual_cost]
            return ConfirmRow(entry.pk, cells, outcome if entry.state in sources else "cannot: left unchanged")

        return confirm_with_reason(
            self,
            request,
            queryset,
            action=action,
            permission=permission,
            title=title,
            explanation=explanation,
            headers=self.HEADERS,
            row=row,
            submit_label=submit_label,
            apply=apply,
            noun=("entry", "entries"),
        )

    @admin.action(description="Finalize by hand (FINALIZE_FAILED → FINALIZE_ACKED)", permissions=["finalize"])
    def finalize_by_hand(self, request: HttpRequest, queryset: QuerySet[BillingEntry]) -> HttpResponse | None:
        actor = request.user.get_username()
        return self._confirm(
            request,
            queryset,
            action="finalize_by_hand",
            permission="billing.finalize_billingentry",
            title="Finalize by hand",
            explanation="Poison entries settled upstream by hand are marked FINALIZE_ACKED. No money moves.",
            outcome="FINALIZE_FAILED → FINALIZE_ACKED",
            sources={EntryState.FINALIZE_FAILED},
            submit_label="Finalize",
            apply=lambda entry, reason: services.entry_finalize_ack(
                entry_id=entry.pk, response_status=0, now=clock.now(), actor=actor, reason=reason, manual=True
            ),
        )

    @admin.action(description="Void and refund (COMMITTED or FINALIZE_FAILED → VOIDED)", permissions=["void"])
    def void_entries(self, request: HttpRequest, queryset: QuerySet[BillingEntry]) -> HttpResponse | None:
        actor = request.user.get_username()
        return self._confirm(
            request,
            queryset,
            action="void_entries",
            permission="billing.void_billingentry",
            title="Void and refund",
            explanation="The actual cost of each entry goes back to its account's available credit.",
            outcome="→ VOIDED, actual cost refunded",
            sources={EntryState.COMMITTED, EntryState.FINALIZE_FAILED},
            submit_label="Void",
            apply=lambda entry, reason: services.entry_void(
                entry_id=entry.pk, reason=reason, actor=actor, now=clock.now()
            ),
        )

    @admin.action(description="Retry the selected poison entries upstream", permissions=["finalize"])
    def replay_selected(self, request: HttpRequest, queryset: QuerySet[BillingEntry]) -> HttpResponse | None:
        return self._replay(request, queryset, action="replay_selected")

    @admin.action(description="Retry all poison entries upstream (the oldest 100)", permissions=["finalize"])
    def replay_poison(self, request: HttpRequest, queryset: QuerySet[BillingEntry]) -> HttpResponse | None:
        if request.POST.get("confirmed") != "yes":  # the confirmation page lists them; its POST selects them
            oldest = BillingEntry.objects.filter(state=EntryState.FINALIZE_FAILED).order_by("updated_at")
            queryset = BillingEntry.objects.filter(pk__in=list(oldest.values_list("pk", flat=True)[:100]))
        return self._replay(request, queryset, action="replay_poison")

    def _replay(self, request: HttpRequest, queryset: QuerySet[BillingEntry], *, action: str) -> HttpResponse | None:
        actor = request.user.get_username()
        return self._confirm(
            request,
            queryset,
            action=action,
            permission="billing.finalize_billingentry",
            title="Retry upstream",
            explanation="Each poison entry is sent to the upstream ledger again by the finalize worker.",
            outcome="retried upstream",
            sources={EntryState.FINALIZE_FAILED},
            submit_label="Retry",
            apply=lambda entry, reason: services.entry_finalize_replay_request(
                entry_id=entry.pk, actor=actor, reason=reason, now=clock.now()
            ),
        )

    def has_finalize_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("billing.finalize_billingentry"))

    def has_void_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("billing.void_billingentry"))


@admin.register(BillingEntry)
class BillingEntryAdmin(EntryActionsMixin):
    list_display = ["id", "account", "state", "estimated_cost", "actual_cost", "finalize_attempts", "created_at"]
    list_filter = ["state", AccountIdFilter]
    list_select_related = ["account"]
    raw_id_fields = ["account"]
    search_fields = ["=id", "=correlation_id"]
    date_hierarchy = "created_at"
    actions = ["finalize_by_hand", "void_entries", "replay_selected", "replay_poison"]


@admin.register(FinalizeDeadLetter)
class FinalizeDeadLetterAdmin(EntryActionsMixin):
    """The finalize dead letters (FINALIZE_FAILED): retry, finalize by hand, or void."""

    list_display = ["id", "account", "actual_cost", "finalize_attempts", "finalize_last_error", "updated_at"]
    list_select_related = ["account"]
    search_fields = ["=id", "=correlation_id"]
    actions = ["replay_selected", "finalize_by_hand", "void_entries"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[BillingEntry]:
        return super().get_queryset(request).filter(state=EntryState.FINALIZE_FAILED)


class PostingInline(admin.TabularInline[Posting, JournalEntry]):
    model = Posting
    extra = 0
    can_delete = False
    fields = ["account", "bucket", "delta", "denomination"]
    readonly_fields = ["account", "bucket", "delta", "denomination"]

    def has_add_permission(self, request: HttpRequest, obj: JournalEntry | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(JournalEntry)
class JournalEntryAdmin(ReadOnlyAdmin[JournalEntry]):
    list_display = ["id", "event_type", "billing_entry", "correlation_id", "created_at"]
    list_filter = ["event_type"]
    raw_id_fields = ["billing_entry"]
    search_fields = ["=correlation_id", "=billing_entry__id"]
    inlines = [PostingInline]


@admin.register(Posting)
class PostingAdmin(ReadOnlyAdmin[Posting]):
    list_display = ["id", "journal_entry", "account", "bucket", "delta", "denomination"]
    list_filter = ["denomination", "bucket"]
    list_select_related = ["journal_entry", "account"]
    raw_id_fields = ["journal_entry", "account"]


@admin.register(DailySpend)
class DailySpendAdmin(ReadOnlyAdmin[DailySpend]):
    list_display = ["account", "day", "spent", "held", "low_balance_notified_at"]
    list_select_related = ["account"]
    date_hierarchy = "day"


@admin.register(Subscription)
class SubscriptionAdmin(ReadOnlyAdmin[Subscription]):
    list_display = ["community_id", "tier", "status", "payment_provider", "grace_until", "current_period_end"]
    list_filter = ["status", "tier", "payment_provider"]
    search_fields = ["=community_id", "=payment_subscription_id"]


@admin.register(BoostPurchase)
class BoostPurchaseAdmin(ReadOnlyAdmin[BoostPurchase]):
    list_display = ["payment_id", "member_id", "community_id", "months", "amount_paid_cents", "expires_at"]
    search_fields = ["=member_id", "=community_id", "=payment_id"]


@admin.register(BadgePurchase)
class BadgePurchaseAdmin(ReadOnlyAdmin[BadgePurchase]):
    list_display = ["member_id", "payment_id", "badge_style", "created_at"]
    search_fields = ["=member_id"]
