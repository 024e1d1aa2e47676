"""The ledger in the admin: read-only (no add, change or delete).

State changes happen only through services; finance actions (finalize,
void with a reason and a confirmation page) arrive with the admin issue.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils import timezone

from billing import services
from billing.models import Account, BillingEntry, JournalEntry, Posting
from billing.tasks import finalize_bulk_replay_task
from finn.errors import DomainError
from finn.models import AuditEvent


class ReadOnlyAdmin(admin.ModelAdmin):
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Account)
class AccountAdmin(ReadOnlyAdmin):
    list_display = ["id", "kind", "code", "owner", "available", "held", "credit_limit"]
    list_filter = ["kind"]
    list_select_related = ["owner"]
    search_fields = ["code", "name", "owner__username"]


@admin.register(BillingEntry)
class BillingEntryAdmin(ReadOnlyAdmin):
    list_display = ["id", "account", "state", "estimated_cost", "actual_cost", "finalize_attempts", "created_at"]
    list_filter = ["state"]
    list_select_related = ["account"]
    raw_id_fields = ["account"]
    search_fields = ["id", "correlation_id"]
    date_hierarchy = "created_at"
    actions = ["finalize_by_hand", "void_entries", "replay_poison"]

    def _confirm(
        self,
        request: HttpRequest,
        queryset: QuerySet[BillingEntry],
        *,
        action: str,
        title: str,
        explanation: str,
        submit_label: str,
        apply: Callable[[BillingEntry, str], object],
    ) -> TemplateResponse | None:
        """Ask for a reason on a confirmation page, then apply the service per entry."""
        reason = (request.POST.get("reason") or "").strip()
        error = ""
        if request.POST.get("confirmed") == "yes":
            if reason:
                done, refused = 0, []
                for entry in queryset:
                    try:
                        apply(entry, reason)
                        done += 1
                    except DomainError as exc:
                        refused.append(f"{entry.pk}: {exc.message}")
                self.message_user(request, f"{done} entr{'y' if done == 1 else 'ies'} done.")
                if refused:
                    self.message_user(request, "Refused: " + "; ".join(refused), messages.ERROR)
                return None
            error = "A reason is required."
        context = {
            **self.admin_site.each_context(request),
            "title": title,
            "explanation": explanation,
            "entries": list(queryset),
            "action": action,
            "reason": reason,
            "error": error,
            "submit_label": submit_label,
        }
        return TemplateResponse(request, "admin/billing/confirm_action.html", context)

    @admin.action(description="Finalize by hand (poison only)", permissions=["finalize"])
    def finalize_by_hand(self, request: HttpRequest, queryset: QuerySet[BillingEntry]) -> TemplateResponse | None:
        actor = request.user.get_username()
        return self._confirm(
            request,
            queryset,
            action="finalize_by_hand",
            title="Finalize by hand",
            explanation="These FINALIZE_FAILED entries will be marked FINALIZE_ACKED (settled upstream by hand).",
            submit_label="Finalize",
            apply=lambda entry, reason: services.entry_finalize_ack(
                entry_id=entry.pk, response_status=0, now=timezone.now(), actor=actor, reason=reason, manual=True
            ),
        )

    @admin.action(description="Void and refund", permissions=["void"])
    def void_entries(self, request: HttpRequest, queryset: QuerySet[BillingEntry]) -> TemplateResponse | None:
        actor = request.user.get_username()
        return self._confirm(
            request,
            queryset,
            action="void_entries",
            title="Void and refund",
            explanation="The actual cost of these charged entries goes back to the customer's available credit.",
            submit_label="Void",
            apply=lambda entry, reason: services.entry_void(
                entry_id=entry.pk, reason=reason, actor=actor, now=timezone.now()
            ),
        )

    @admin.action(description="Replay all poison entries upstream", permissions=["finalize"])
    def replay_poison(self, request: HttpRequest, queryset: QuerySet[BillingEntry]) -> None:
        finalize_bulk_replay_task.delay(settings.FINALIZE_REPLAY_CONCURRENCY, 100)
        self.message_user(request, "Replay of poison entries queued.")

    def has_finalize_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.is_active and request.user.is_staff)

    def has_void_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.is_active and request.user.is_staff)


class PostingInline(admin.TabularInline):
    model = Posting
    extra = 0
    can_delete = False
    fields = ["account", "bucket", "delta", "denomination"]
    readonly_fields = ["account", "bucket", "delta", "denomination"]

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(JournalEntry)
class JournalEntryAdmin(ReadOnlyAdmin):
    list_display = ["id", "event_type", "billing_entry", "correlation_id", "created_at"]
    list_filter = ["event_type"]
    raw_id_fields = ["billing_entry"]
    inlines = [PostingInline]


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ["sequence", "event_type", "billing_entry_id", "account_id", "actor", "created_at"]
    list_filter = ["event_type"]
    search_fields = ["billing_entry_id", "correlation_id"]
