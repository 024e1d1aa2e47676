"""Cross-cutting tables: the audit log (finn's write-ahead log) and
idempotency keys. Every app writes to them through ``finn.audit`` and
``finn.idempotency``; nobody updates or deletes audit rows (a trigger refuses).
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.db.models.functions import Lower


class ClockTimestamp(models.Func):
    """PostgreSQL's clock_timestamp(): the wall time of the INSERT itself."""

    template = "clock_timestamp()"
    output_field = models.DateTimeField()


class AuditEvent(models.Model):
    """One billing event, append-only, in the same transaction as its effect."""

    sequence = models.BigAutoField(primary_key=True)
    schema_version = models.PositiveSmallIntegerField(default=1)
    event_type = models.CharField(max_length=64)
    billing_entry_id = models.CharField(max_length=26, null=True, blank=True)  # noqa: DJ001 - NULL: no entry
    account_id = models.BigIntegerField(null=True, blank=True)
    correlation_id = models.CharField(max_length=128)
    actor = models.CharField(max_length=150, blank=True, default="")
    reason = models.TextField(blank=True, default="")
    payload = models.JSONField()
    crc32 = models.CharField(max_length=8)
    created_at = models.DateTimeField()
    # Hash chain, filled in batches by audit_chain_task (writers never wait
    # on one lock): chain_prev is the sequence of the previous record,
    # chain_hash = sha256(previous hash | sequence | type | entry id | crc32).
    # When the row was really inserted (not the operation's "now"): the
    # chainer only links rows inserted more than a minute ago, by which time
    # every transaction that took a smaller sequence number has finished.
    inserted_at = models.DateTimeField(db_default=ClockTimestamp())
    chain_prev = models.BigIntegerField(null=True, blank=True)
    chain_hash = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001 - NULL: not chained yet

    class Meta:
        indexes = [
            models.Index(fields=["billing_entry_id"], name="finn_audit_entry_idx"),
            models.Index(fields=["account_id", "sequence"], name="finn_audit_account_idx"),
            models.Index(fields=["sequence"], condition=Q(chain_hash__isnull=True), name="finn_audit_unchained_idx"),
        ]
        constraints = [
            # A checksum that is not 8 lowercase hex digits cannot be
            # verified on replay; stop it at the door.
            models.CheckConstraint(condition=Q(crc32__regex=r"^[0-9a-f]{8}$"), name="finn_auditevent_crc32_format"),
            models.CheckConstraint(condition=Q(schema_version__gte=1), name="finn_auditevent_schema_version_positive"),
            models.CheckConstraint(
                condition=Q(chain_hash__isnull=True) | Q(chain_hash__regex=r"^[0-9a-f]{64}$"),
                name="finn_auditevent_chain_hash_format",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.sequence} {self.event_type}"


class IdempotencyKey(models.Model):
    """A client's Idempotency-Key for one endpoint: claim, then stored response."""

    class Status(models.TextChoices):
        IN_PROGRESS = "in_progress", "In progress"
        COMPLETED = "completed", "Completed"

    account_id = models.BigIntegerField()
    scope = models.CharField(max_length=64)
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)
    status = models.CharField(max_length=16, choices=Status.choices)
    locked_until = models.DateTimeField()
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField()
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            # Two concurrent first requests with one key must not both run:
            # the unique row is the claim (never check-then-create).
            models.UniqueConstraint(
                fields=["account_id", "scope", "key"], name="finn_idempotencykey_account_scope_key_uniq"
            ),
            models.CheckConstraint(
                condition=Q(status="in_progress") | Q(response_status__isnull=False, response_body__isnull=False),
                name="finn_idempotencykey_completed_has_response",
            ),
        ]
        indexes = [models.Index(fields=["created_at"], name="finn_idem_created_idx")]

    def __str__(self) -> str:
        return f"{self.scope}:{self.key} ({self.status})"


class WaitlistSignup(models.Model):
    """A visitor who asked to be let in. Email (and wallet, when given) are stored normalized."""

    email = models.CharField(max_length=254)
    wallet = models.CharField(max_length=42, null=True, blank=True)  # noqa: DJ001 - NULL: not given
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            # One signup per address, whatever its case (normalized before insert; checked here).
            models.UniqueConstraint(fields=["email"], name="finn_waitlistsignup_email_uniq"),
            models.UniqueConstraint(fields=["wallet"], name="finn_waitlistsignup_wallet_uniq"),
            models.CheckConstraint(condition=Q(email=Lower("email")), name="finn_waitlistsignup_email_lower"),
            models.CheckConstraint(
                condition=Q(wallet__isnull=True) | Q(wallet__regex=r"^0x[0-9a-f]{40}$"),
                name="finn_waitlistsignup_wallet_lower_hex",
            ),
        ]

    def __str__(self) -> str:
        return self.email


class CspReport(models.Model):
    """One Content-Security-Policy violation a browser reported."""

    document_uri = models.CharField(max_length=500)
    violated_directive = models.CharField(max_length=200)
    blocked_uri = models.CharField(max_length=500)
    disposition = models.CharField(max_length=16, blank=True, default="")
    created_at = models.DateTimeField()

    class Meta:
        verbose_name = "CSP report"
        indexes = [models.Index(fields=["created_at"], name="finn_cspreport_created_idx")]

    def __str__(self) -> str:
        return f"{self.violated_directive} on {self.document_uri}"


class FeatureFlag(models.Model):
    """A feature switch (billing, credits, nft, onboarding, x402, x402_public); Redis caches it."""

    name = models.CharField(primary_key=True, max_length=32)
    enabled = models.BooleanField()
    updated_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name}: {'on' if self.enabled else 'off'}"


class BetaAllowlistEntry(models.Model):
    """A wallet let into the closed beta (onboarding)."""

    address = models.CharField(primary_key=True, max_length=42)
    note = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField()

    class Meta:
        verbose_name = "beta allowlist entry"
        verbose_name_plural = "beta allowlist"
        constraints = [
            models.CheckConstraint(
                condition=Q(address__regex=r"^0x[0-9a-f]{40}$"), name="finn_betaallowlistentry_address_lower_hex"
            ),
        ]

    def __str__(self) -> str:
        return self.address


class JobLease(models.Model):
    """Who runs a one-at-a-time job now, until when (``finn.locks.job_lease``).

    A row per job, taken and renewed by single statements against the database clock, so it
    works behind a transaction-mode pooler (a session-level advisory lock does not: its unlock
    can land on another server connection) and on every node; a holder that dies frees the job
    when ``expires_at`` passes.
    """

    name = models.CharField(max_length=64, primary_key=True)
    holder = models.CharField(max_length=64)
    expires_at = models.DateTimeField()
    acquired_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name} held by {self.holder} until {self.expires_at:%Y-%m-%d %H:%M:%S}"
