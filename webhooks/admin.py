"""Webhook events in the admin: read-only, with a replay action for failed and dead events."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse

from finn import clock
from finn.admin_base import CappedPaginator, ConfirmRow, confirm_with_reason
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
    def replay_events(self, request: HttpRequest, queryset: QuerySet[WebhookEvent]) -> HttpResponse | None:
        actor = request.user.get_username()
        replayable = {WebhookEvent.Status.DEAD, WebhookEvent.Status.FAILED}
        return confirm_with_reason(
            self,
            request,
            queryset,
            action="replay_events",
            permission="webhooks.change_webhookevent",
            title="Replay webhook events",
            explanation="Each failed or dead event goes back to pending and is processed again (exactly once).",
            headers=["event", "provider", "provider event id", "type", "status"],
            row=lambda event: ConfirmRow(
                event.pk,
                [event.pk, event.provider, event.provider_event_id, event.event_type, event.status],
                "processed again" if event.status in replayable else "cannot: left unchanged",
            ),
            submit_label="Replay",
            noun=("event", "events"),
            apply=lambda event, reason: webhook_replay(event_pk=event.pk, now=clock.now(), actor=actor, reason=reason),
        )


@admin.register(WebhookDeadLetter)
class WebhookDeadLetterAdmin(WebhookEventAdmin):
    """Events that exhausted their retries (and failed ones waiting for a retry)."""

    list_filter = ["status", "provider"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[WebhookEvent]:
        return super().get_queryset(request).filter(status__in=[WebhookEvent.Status.DEAD, WebhookEvent.Status.FAILED])
