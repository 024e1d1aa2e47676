"""Webhook events in the admin: read-only, with a replay action for failed and dead events."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from finn.admin_base import CappedPaginator
from webhooks.models import WebhookDeadLetter, WebhookEvent
from webhooks.services import webhook_replay


@admin.register(WebhookEvent)
class WebhookEventAdmin(admin.ModelAdmin[WebhookEvent]):
    list_display = ["provider", "provider_event_id", "event_type", "raw_type", "status", "attempts", "received_at"]
    list_filter = ["status", "provider", "event_type"]
    search_fields = ["=provider_event_id"]
    readonly_fields = [f.name for f in WebhookEvent._meta.fields]
    actions = ["replay_events"]
    show_full_result_count = False
    paginator = CappedPaginator

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: WebhookEvent | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: WebhookEvent | None = None) -> bool:
        # No field can be edited (all read-only); the permission only gates the replay action.
        return bool(request.user.has_perm("webhooks.change_webhookevent"))

    @admin.action(description="Replay selected failed/dead events", permissions=["change"])
    def replay_events(self, request: HttpRequest, queryset: QuerySet[WebhookEvent]) -> None:
        now = timezone.now()
        replayed = sum(webhook_replay(event_pk=event.pk, now=now) for event in queryset)
        self.message_user(request, f"{replayed} event(s) queued for replay.")


@admin.register(WebhookDeadLetter)
class WebhookDeadLetterAdmin(WebhookEventAdmin):
    """Events that exhausted their retries (and failed ones waiting for a retry)."""

    list_filter = ["status", "provider"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[WebhookEvent]:
        return super().get_queryset(request).filter(status__in=[WebhookEvent.Status.DEAD, WebhookEvent.Status.FAILED])
