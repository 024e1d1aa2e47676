"""The ledger in the admin: read-only (no add, change or delete).

State changes happen only through services; finance actions (finalize,
void with a reason and a confirmation page) arrive with the admin issue.
"""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from billing.models import Account, BillingEntry, JournalEntry, Posting
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
    list_display = ["id", "account", "state", "estimated_cost", "actual_cost", "created_at"]
    list_filter = ["state"]
    list_select_related = ["account"]
    raw_id_fields = ["account"]
    search_fields = ["id", "correlation_id"]
    date_hierarchy = "created_at"


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
