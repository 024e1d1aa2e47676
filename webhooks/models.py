"""Stored provider events: the row is the queue (nothing lost on a 200)."""

from __future__ import annotations

from django.db import models
from django.db.models import Q


class WebhookEvent(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        PROCESSED = "processed"
        FAILED = "failed"
        SKIPPED = "skipped"
        DEAD = "dead"

    provider = models.CharField(max_length=16)
    provider_event_id = models.CharField(max_length=255)
    event_type = models.CharField(max_length=64, help_text="normalized type, or '' when unknown")
    raw_type = models.CharField(max_length=128)
    occurred_at = models.DateTimeField()
    payload = models.JSONField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    received_at = models.DateTimeField()
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            # A provider's redelivery must find the first row, never make a second.
            models.UniqueConstraint(
                fields=["provider", "provider_event_id"], name="webhooks_webhookevent_provider_event_uniq"
            ),
            models.CheckConstraint(
                condition=Q(status__in=["pending", "processed", "failed", "skipped", "dead"]),
                name="webhooks_webhookevent_status_known",
            ),
        ]
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="webhooks_event_due_idx")]

    def __str__(self) -> str:
        return f"{self.provider}:{self.provider_event_id} {self.event_type or self.raw_type} ({self.status})"


class WebhookDeadLetter(WebhookEvent):
    """Dead (and failed) webhook events, as their own admin list with a replay action."""

    class Meta:
        proxy = True
        verbose_name = "webhook dead letter"
