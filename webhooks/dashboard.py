"""The finance dashboard's webhook panel: events still to process, failed and dead.

One query through the ``(status, next_attempt_at)`` index, over the open statuses only
(processed and skipped events are history: counting them would read the whole table).
"""

from __future__ import annotations

from datetime import datetime

from django.db.models import Count, Min
from django.urls import reverse

from finn.dashboard import Panel, Tile, panel_register
from webhooks.models import WebhookEvent

OPEN_STATUSES = (WebhookEvent.Status.PENDING, WebhookEvent.Status.FAILED, WebhookEvent.Status.DEAD)


def webhook_panels(now: datetime) -> list[Panel]:
    rows = (
        WebhookEvent.objects.filter(status__in=OPEN_STATUSES)
        .values("status")
        .annotate(count=Count("pk"), oldest=Min("received_at"))
    )
    by_status = {row["status"]: row for row in rows}
    events = reverse("admin:webhooks_webhookevent_changelist")
    tiles = []
    for status in OPEN_STATUSES:
        row = by_status.get(status, {"count": 0, "oldest": None})
        oldest = f", oldest {int((now - row['oldest']).total_seconds() // 60)} min" if row["oldest"] else ""
        alert = status == WebhookEvent.Status.DEAD and row["count"] > 0
        tiles.append(
            Tile(f"Webhook events {status}", f"{row['count']:,}{oldest}", alert, f"{events}?status__exact={status}")
        )
    return [Panel("Payment-provider webhooks", tiles)]


def register() -> None:
    panel_register("webhooks", order=30, build=webhook_panels)
