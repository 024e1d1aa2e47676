"""The ledger in the admin, for finance staff: read-only, with finalize/void actions.

Ledger models have no add, change or delete. State changes happen only through
actions that ask for a reason on a confirmation page and call the billing
services (which audit the actor and the reason). Lists stay fast on large tables:
selected relations, no full result count, a capped paginator.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, HttpResponseBase
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from billing import selectors, services, statements
from billing.admin_money import amount_range_filter, money
from billing.models import (
    Account,
    BadgePurchase,
    BillingEntry,
    BoostPurchase,
    DailySpend,
    FinalizeDeadLetter,
    JournalEntry,
    Posting,
    SpendPolicy,
    Subscription,
    WebhookDelivery,
    WebhookEndpoint,
)
from billing.states import EntryState
from billing.units import format_amount
from finn import clock
from finn.admin_base import (
    ConfirmRow,
    ReadOnlyAdmin,
    SecondFactorEditsMixin,
    confirm_with_reason,
    require_second_factor,
)
from finn.errors import DomainError
from finn.second_factor import admin_audit_context


def _table(headers: list[str], rows: list[tuple[Any, ...]], empty: str) -> SafeString:
    """A small read-only table for a detail page (cells are escaped)."""
    if not rows:
        return format_html("<p>{}</p>", empty)
    head = format_html_join("", "<th>{}</th>", ((h,) for h in headers))
    body = format_html_join(
        "", "<tr>{}</tr>", ((format_html_join("", "<td>{}</td>", ((cell,) for cell in row)),) for row in rows)
    )
    return format_html('<table class="finn-detail"><thead><tr>{}</tr></thead><tbody>{}</tbody></table>', head, body)


def _entry_link(entry_id: str | None) -> SafeString | str:
    if not entry_id:
        return "—"
    return format_html('<a href="{}">{}</a>', reverse("admin:billing_billingentry_change", args=[entry_id]), entry_id)


@admin.register(Account)
class AccountAdmin(ReadOnlyAdmin[Account]):
    available_money = money("available", "available")
    held_money = money("held", "held")
    credit_limit_money = money("credit_limit", "credit limit")
    daily_cap_money = money("daily_cap", "daily cap")
    list_display = [
        "id", "kind", "code", "owner", "available_money", "held_money", "credit_limit_money", "daily_cap_money",
    ]  # fmt: skip
    list_filter = [
        "kind", amount_range_filter("available", "available (USD)"), amount_range_filter("held", "held (USD)"),
    ]  # fmt: skip
    list_select_related = ["owner"]
    search_fields = ["code", "name", "owner__username"]
    fieldsets = [
        (None, {"fields": ["kind", "code", "name", "owner", "created_at"]}),
        ("Balance", {"fields": ["balance", "spent_today", "last_reconciliation"]}),
        ("Open holds", {"fields": ["open_holds", "open_hold_list"]}),
        ("Recent movements", {"fields": ["recent_movements", "statement_export"]}),
    ]
    readonly_fields = [
        "balance", "spent_today", "open_holds", "open_hold_list", "recent_movements", "last_reconciliation",
        "statement_export",
    ]  # fmt: skip

    def get_urls(self) -> list[URLPattern]:
        statement = self.admin_site.admin_view(self.statement_view)
        own = [path("<int:account_id>/statement/", statement, name="billing_account_statement")]
        return own + super().get_urls()

    def statement_view(self, request: HttpRequest, account_id: int) -> HttpResponseBase:
        """The API's statement as CSV, for staff who may view accounts: UTC days from/to, inclusive."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            first = date.fromisoformat(request.GET.get("from", "")[:10])
            last = date.fromisoformat(request.GET.get("to", "")[:10])
        except ValueError:
            return HttpResponseBadRequest("from and to are days: YYYY-MM-DD")
        start = datetime(first.year, first.month, first.day, tzinfo=UTC)
        end = datetime(last.year, last.month, last.day, tzinfo=UTC) + timedelta(days=1)
        try:
            return statements.statement_response(account_id=account_id, start=start, end=end, fmt="csv")
        except DomainError as exc:
            return HttpResponseBadRequest(exc.message)

    @admin.display(description="Statement (CSV)")
    def statement_export(self, obj: Account) -> SafeString:
        """Links, not a form: the change page is itself a form, and forms do not nest."""
        today = clock.now().date()
        month = today.replace(day=1)
        previous = (month - timedelta(days=1)).replace(day=1)
        url = reverse("admin:billing_account_statement", args=[obj.pk])
        periods = [
            ("this month", month, today),
            ("last month", previous, month - timedelta(days=1)),
            ("last 30 days", today - timedelta(days=29), today),
        ]
        return format_html_join(
            " · ", '<a class="statement-link" href="{}?from={}&amp;to={}">{}</a>',
            ((url, first.isoformat(), last.isoformat(), label) for label, first, last in periods),
        )  # fmt: skip

    @admin.display(description="Balance")
    def balance(self, obj: Account) -> SafeString:
        rows = [
            ("available", format_amount(obj.available)),
            ("held", format_amount(obj.held)),
            ("credit limit", format_amount(obj.credit_limit)),
            ("daily cap", format_amount(obj.daily_cap)),
            ("refill threshold", format_amount(obj.refill_threshold)),
        ]
        return _table(["", "USD"], rows, "")

    @admin.display(description="Holds (soonest to expire)")
    def open_hold_list(self, obj: Account) -> SafeString:
        rows = [
            (_entry_link(e.pk), format_amount(e.estimated_cost), e.correlation_id, f"{e.expires_at:%Y-%m-%d %H:%M:%S}")
            for e in selectors.account_open_holds(account_id=obj.pk)
        ]
        return _table(["entry", "held", "correlation id", "expires (UTC)"], rows, "No open holds.")

    @admin.display(description=f"Latest {selectors.ADMIN_DETAIL_ROWS} postings")
    def recent_movements(self, obj: Account) -> SafeString:
        rows = [
            (
                f"{p.journal_entry.created_at:%Y-%m-%d %H:%M:%S}",
                p.journal_entry.event_type,
                _entry_link(p.journal_entry.billing_entry_id),
                p.bucket,
                format_amount(p.delta, p.denomination),
            )
            for p in selectors.account_recent_postings(account_id=obj.pk)
        ]
        return _table(["at (UTC)", "event", "entry", "bucket", "amount"], rows, "No postings yet.")

    def _overview(self, obj: Account) -> selectors.AccountOverview:
        """Read once per page (three fields show it), kept on the object, not on this shared admin."""
        overview: selectors.AccountOverview | None = getattr(obj, "_finn_overview", None)
        if overview is None:
            overview = selectors.account_overview(account_id=obj.pk, now=clock.now())
            obj._finn_overview = overview  # type: ignore[attr-defined]
        return overview

    @admin.display(description="Spent today (UTC day)")
    def spent_today(self, obj: Account) -> str:
        overview = self._overview(obj)
        return f"{format_amount(overview.spent_today)} spent, {format_amount(overview.held_today)} held"

    @admin.display(description="Open holds")
    def open_holds(self, obj: Account) -> str:
        overview = self._overview(obj)
        return f"{overview.open_holds} holds, {format_amount(overview.open_holds_amount)}"

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

    HEADERS = ["entry", "account", "state", "estimate", "actual"]

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
            cells = [
                entry.pk, entry.account_id, entry.state, format_amount(entry.estimated_cost),
                format_amount(entry.actual_cost),
            ]  # fmt: skip
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
    estimated_money = money("estimated_cost", "estimate")
    actual_money = money("actual_cost", "actual")
    list_display = ["id", "account", "state", "estimated_money", "actual_money", "finalize_attempts", "created_at"]
    list_filter = [
        "state", AccountIdFilter, amount_range_filter("estimated_cost", "estimate (USD)"),
        amount_range_filter("actual_cost", "actual (USD)"),
    ]  # fmt: skip
    readonly_fields = ["estimate_and_actual", "journal", "audit_trail"]

    @admin.display(description="Amounts")
    def estimate_and_actual(self, obj: BillingEntry) -> str:
        return f"estimate {format_amount(obj.estimated_cost)}, actual {format_amount(obj.actual_cost)}"

    @admin.display(description="Journal and postings")
    def journal(self, obj: BillingEntry) -> SafeString:
        rows = [
            (journal.pk, journal.event_type, f"{journal.created_at:%Y-%m-%d %H:%M:%S}", posting.account_id,
             posting.bucket, format_amount(posting.delta, posting.denomination))
            for journal, postings in selectors.entry_journals(entry_id=obj.pk)
            for posting in postings
        ]  # fmt: skip
        return _table(["journal", "event", "at (UTC)", "account", "bucket", "amount"], rows, "No journal entries.")

    @admin.display(description="Audit rows")
    def audit_trail(self, obj: BillingEntry) -> SafeString:
        rows = [
            (a.sequence, a.event_type, f"{a.created_at:%Y-%m-%d %H:%M:%S}", a.actor or "—", a.reason or "—")
            for a in selectors.entry_audit_rows(entry_id=obj.pk)
        ]
        return _table(["sequence", "event", "at (UTC)", "actor", "reason"], rows, "No audit rows.")

    list_select_related = ["account"]
    raw_id_fields = ["account"]
    search_fields = ["=id", "=correlation_id"]
    date_hierarchy = "created_at"
    actions = ["finalize_by_hand", "void_entries", "replay_selected", "replay_poison"]


@admin.register(FinalizeDeadLetter)
class FinalizeDeadLetterAdmin(EntryActionsMixin):
    """The finalize dead letters (FINALIZE_FAILED): retry, finalize by hand, or void."""

    actual_money = money("actual_cost", "actual")
    list_display = ["id", "account", "actual_money", "finalize_attempts", "finalize_last_error", "updated_at"]
    list_select_related = ["account"]
    search_fields = ["=id", "=correlation_id"]
    actions = ["replay_selected", "finalize_by_hand", "void_entries"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[BillingEntry]:
        return super().get_queryset(request).filter(state=EntryState.FINALIZE_FAILED)


class PostingInline(admin.TabularInline[Posting, JournalEntry]):
    model = Posting
    extra = 0
    can_delete = False
    fields = ["account", "bucket", "amount"]
    readonly_fields = ["account", "bucket", "amount"]

    @admin.display(description="amount")
    def amount(self, obj: Posting) -> str:
        return format_amount(obj.delta, obj.denomination)

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
    list_display = ["id", "journal_entry", "account", "bucket", "amount", "denomination"]
    list_filter = ["denomination", "bucket"]
    list_select_related = ["journal_entry", "account"]
    raw_id_fields = ["journal_entry", "account"]

    @admin.display(description="amount", ordering="delta")
    def amount(self, obj: Posting) -> str:
        return format_amount(obj.delta, obj.denomination)


@admin.register(DailySpend)
class DailySpendAdmin(ReadOnlyAdmin[DailySpend]):
    spent_money = money("spent", "spent")
    held_money = money("held", "held")
    list_display = ["account", "day", "spent_money", "held_money", "low_balance_notified_at"]
    list_select_related = ["account"]
    date_hierarchy = "day"


@admin.register(Subscription)
class SubscriptionAdmin(ReadOnlyAdmin[Subscription]):
    list_display = ["community_id", "tier", "status", "payment_provider", "grace_until", "current_period_end"]
    list_filter = ["status", "tier", "payment_provider"]
    search_fields = ["=community_id", "=payment_subscription_id"]


@admin.register(BoostPurchase)
class BoostPurchaseAdmin(ReadOnlyAdmin[BoostPurchase]):
    paid_money = money("amount_paid_cents", "paid", denomination="cents")
    list_display = ["payment_id", "member_id", "community_id", "months", "paid_money", "expires_at"]
    search_fields = ["=member_id", "=community_id", "=payment_id"]


@admin.register(BadgePurchase)
class BadgePurchaseAdmin(ReadOnlyAdmin[BadgePurchase]):
    list_display = ["member_id", "payment_id", "badge_style", "created_at"]
    search_fields = ["=member_id"]


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(ReadOnlyAdmin[WebhookEndpoint]):
    """Customers' outbound webhook endpoints (the secret is never shown here)."""

    list_display = ["id", "account", "url", "event_types", "active", "created_at"]
    list_filter = ["active"]
    list_select_related = ["account"]
    raw_id_fields = ["account"]
    search_fields = ["=account__id", "url"]
    exclude = ["secret", "previous_secret"]


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin[WebhookDelivery]):
    """The outbound webhook outbox: every delivery, its attempts and last answer; replayable."""

    list_display = ["id", "event_type", "endpoint", "status", "attempts", "last_status_code", "created_at"]
    list_filter = ["status", "event_type"]
    list_select_related = ["endpoint"]
    raw_id_fields = ["endpoint"]
    search_fields = ["=event_id", "=endpoint__id"]
    date_hierarchy = "created_at"
    actions = ["replay_deliveries"]

    @admin.action(description="Send the selected deliveries again", permissions=["view"])
    def replay_deliveries(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> HttpResponse | None:
        actor = request.user.get_username()
        return confirm_with_reason(
            self,
            request,
            queryset,
            action="replay_deliveries",
            permission="billing.view_webhookdelivery",
            title="Send webhook deliveries again",
            explanation="Each delivery is sent again with its own webhook-id (receivers deduplicate on it).",
            headers=["delivery", "event", "endpoint", "status", "attempts"],
            row=lambda d: ConfirmRow(d.pk, [d.pk, d.event_type, d.endpoint_id, d.status, d.attempts], "sent again"),
            submit_label="Send again",
            apply=lambda d, reason: services.deliveries_replay(
                delivery_ids=[d.pk], now=clock.now(), actor=actor, reason=reason
            ),
            noun=("delivery", "deliveries"),
        )


@admin.register(SpendPolicy)
class SpendPolicyAdmin(SecondFactorEditsMixin, admin.ModelAdmin[SpendPolicy]):
    """An agent's budget policy; saved through the audited service (empty models: any model)."""

    list_display = ["account", "per_request_max", "hourly_spend_limit", "hourly_request_limit", "allowed_models",
                    "updated_by", "updated_at"]  # fmt: skip
    fields = ["account", "per_request_max", "hourly_spend_limit", "hourly_request_limit", "allowed_models"]
    raw_id_fields = ["account"]
    search_fields = ["=account__id"]

    def get_readonly_fields(self, request: HttpRequest, obj: SpendPolicy | None = None) -> list[str]:
        return [] if obj is None else ["account"]

    def save_model(self, request: HttpRequest, obj: SpendPolicy, form: Any, change: bool) -> None:
        require_second_factor(request, "billing.change_spendpolicy" if change else "billing.add_spendpolicy")
        with admin_audit_context(request):
            services.spend_policy_set(
                account_id=obj.account_id,
                per_request_max=obj.per_request_max,
                hourly_spend_limit=obj.hourly_spend_limit,
                hourly_request_limit=obj.hourly_request_limit,
                allowed_models=obj.allowed_models or None,
                actor=request.user.get_username(),
                now=clock.now(),
            )

    def delete_model(self, request: HttpRequest, obj: SpendPolicy) -> None:
        require_second_factor(request, "billing.delete_spendpolicy")
        with admin_audit_context(request):
            services.spend_policy_set(
                account_id=obj.account_id, per_request_max=None, hourly_spend_limit=None, hourly_request_limit=None,
                allowed_models=None, actor=request.user.get_username(), now=clock.now(),
            )  # fmt: skip

    def has_delete_permission(self, request: HttpRequest, obj: SpendPolicy | None = None) -> bool:
        return obj is not None and super().has_delete_permission(request, obj)
