"""Accounts, billing entries, and the double-entry journal.

Money is integer micro-USD (µUSD) in BigIntegerField everywhere. Invariants
the database can hold are named constraints; the ones a CHECK cannot express
(zero-sum journals, append-only rows, allowed state transitions) are
PostgreSQL triggers created in migration 0002.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import BrinIndex
from django.db import models
from django.db.models import F, Q

from billing.states import CHARGED_STATES, EntryState

ULID_REGEX = r"^[0-9A-HJKMNP-TV-Z]{26}$"


class AccountKind(models.TextChoices):
    USER = "user"
    AGENT = "agent"
    SYSTEM = "system"


class Account(models.Model):
    """Prepaid credit of one owner: ``available`` to spend, ``held`` by reserves.

    System accounts (revenue, treasury, credit notes) keep no balance row:
    their balance is the sum of their postings, so no commit ever updates one
    shared hot row.
    """

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="billing_accounts"
    )
    kind = models.CharField(max_length=8, choices=AccountKind.choices, default=AccountKind.USER)
    code = models.CharField(max_length=64, null=True, blank=True, unique=True)
    name = models.CharField(max_length=200, blank=True, default="")
    available = models.BigIntegerField(default=0)
    held = models.BigIntegerField(default=0)
    credit_limit = models.BigIntegerField(default=0)
    allow_overcapture = models.BooleanField(default=False)
    # Agent wallets: what may be spent per UTC day (counting open holds), and
    # the available balance under which the owner is told to refill.
    # Set when a payment that credited this account was reverted on chain.
    reserves_frozen = models.BooleanField(default=False)
    daily_cap = models.BigIntegerField(null=True, blank=True)
    refill_threshold = models.BigIntegerField(null=True, blank=True)
    # Bumped with every balance change; orders the Redis cache writes.
    version = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            # Reserves can never hold a negative amount (a double release).
            models.CheckConstraint(condition=Q(held__gte=0), name="billing_account_held_non_negative"),
            # Overspending past the credit line (a lost race on reserve).
            models.CheckConstraint(
                condition=Q(available__gte=-F("credit_limit")), name="billing_account_available_within_credit_limit"
            ),
            models.CheckConstraint(condition=Q(credit_limit__gte=0), name="billing_account_credit_limit_non_negative"),
            models.CheckConstraint(
                condition=Q(daily_cap__isnull=True) | Q(daily_cap__gte=0), name="billing_account_daily_cap_non_negative"
            ),
            models.CheckConstraint(
                condition=Q(refill_threshold__isnull=True) | Q(refill_threshold__gte=0),
                name="billing_account_refill_threshold_non_negative",
            ),
            # System balances are derived from postings, never stored.
            models.CheckConstraint(
                condition=~Q(kind="system") | (Q(available=0, held=0, credit_limit=0) & Q(code__isnull=False)),
                name="billing_account_system_has_no_balance_row",
            ),
            models.CheckConstraint(
                condition=Q(kind="system") | Q(code__isnull=True), name="billing_account_code_only_for_system"
            ),
        ]

    def __str__(self) -> str:
        return self.code or f"account {self.pk} ({self.kind})"


class BillingEntry(models.Model):
    """One billed request: reserve an estimate, then commit, release or void."""

    id = models.CharField(primary_key=True, max_length=26)
    # No single-column index: (account_id, created_at) serves every lookup by account, and each
    # state change of an entry rewrites all its index entries (the hot path's commit).
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="entries", db_index=False)
    correlation_id = models.CharField(max_length=128)
    state = models.CharField(max_length=20, choices=EntryState.choices)
    estimated_cost = models.BigIntegerField()
    actual_cost = models.BigIntegerField(null=True, blank=True)
    credit_units_per_usd = models.BigIntegerField()
    usd_usdc_rate = models.DecimalField(max_digits=18, decimal_places=8)
    rate_frozen_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    finalize_attempts = models.PositiveIntegerField(default=0)
    # When the next finalize attempt is due (FINALIZE_PENDING only): the
    # entries table is the finalize queue; the sweeper reads this column.
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    finalize_last_error = models.TextField(blank=True, default="")
    # Poison (FINALIZE_FAILED) older than 24 h is escalated once.
    escalated_at = models.DateTimeField(null=True, blank=True)
    # The UTC day whose daily cap counted this hold (agent accounts with a
    # cap); NULL when no cap applied. Commit, release and expiry settle there.
    cap_day = models.DateField(null=True, blank=True)
    # Highest fencing token a locked writer presented; never decreases.
    fence_token = models.BigIntegerField(default=0)
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001 - NULL: no key
    release_reason = models.CharField(max_length=32, blank=True, default="")
    void_reason = models.TextField(blank=True, default="")
    voided_by = models.CharField(max_length=150, blank=True, default="")
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    # Metered entries (reserved by model and tokens): the model and the price version the
    # estimate was computed at — commit charges at that version — and, once committed by usage,
    # the tokens used. Set once (a trigger refuses changes); empty/NULL for a raw estimate.
    model = models.CharField(max_length=100, blank=True, db_default="")
    price_version = models.BigIntegerField(null=True, blank=True)
    usage_input_tokens = models.BigIntegerField(null=True, blank=True)
    usage_output_tokens = models.BigIntegerField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "billing entries"
        constraints = [
            models.CheckConstraint(condition=Q(id__regex=ULID_REGEX), name="billing_billingentry_id_is_ulid"),
            models.CheckConstraint(condition=Q(estimated_cost__gt=0), name="billing_billingentry_estimate_positive"),
            models.CheckConstraint(
                condition=Q(actual_cost__isnull=True) | Q(actual_cost__gte=0),
                name="billing_billingentry_actual_non_negative",
            ),
            # A charged entry without an actual cost could never be voided or
            # finalized correctly; an uncharged one with a cost is a leak.
            models.CheckConstraint(
                condition=(Q(state__in=sorted(s.value for s in CHARGED_STATES)) & Q(actual_cost__isnull=False))
                | (~Q(state__in=sorted(s.value for s in CHARGED_STATES)) & Q(actual_cost__isnull=True)),
                name="billing_billingentry_actual_iff_charged",
            ),
            models.CheckConstraint(
                condition=Q(state__in=[s.value for s in EntryState]), name="billing_billingentry_state_known"
            ),
            # Fencing tokens are Redis INCR values kept within 2^53-1.
            models.CheckConstraint(
                condition=Q(fence_token__gte=0, fence_token__lte=2**53 - 1),
                name="billing_billingentry_fence_token_range",
            ),
            models.CheckConstraint(
                condition=(Q(model="") & Q(price_version__isnull=True))
                | (~Q(model="") & Q(price_version__isnull=False)),
                name="billing_billingentry_model_iff_price_version",
            ),
            models.CheckConstraint(
                condition=(Q(usage_input_tokens__isnull=True) & Q(usage_output_tokens__isnull=True))
                | Q(usage_input_tokens__gte=0, usage_output_tokens__gte=0, price_version__isnull=False),
                name="billing_billingentry_usage_priced",
            ),
            # One client retry must not reserve twice.
            models.UniqueConstraint(
                fields=["account", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="billing_billingentry_account_idempotency_key_uniq",
            ),
        ]
        indexes = [
            models.Index(fields=["state", "expires_at"], name="billing_entry_state_exp_idx"),
            # Estimate accuracy per model (credits.accuracy): metered entries only, so a raw
            # reserve writes no entry into it.
            models.Index(fields=["model", "created_at"], condition=~Q(model=""), name="billing_entry_model_idx"),
            models.Index(
                fields=["next_attempt_at"],
                condition=Q(state="FINALIZE_PENDING"),
                name="billing_entry_finalize_due_idx",
            ),
            models.Index(
                fields=["account"],
                condition=Q(state__in=["FINALIZE_PENDING", "FINALIZE_FAILED"]),
                name="billing_entry_exposure_idx",
            ),
            models.Index(fields=["account", "created_at"], name="billing_entry_account_idx"),
        ]
        # Finance actions in the admin (granted to the "Finance" group by a migration).
        permissions = [
            ("finalize_billingentry", "Can finalize poison billing entries by hand"),
            ("void_billingentry", "Can void billing entries"),
        ]

    def __str__(self) -> str:
        return f"{self.id} {self.state}"


class Denomination(models.TextChoices):
    MICRO_USD = "micro_usd", "µUSD"
    MICRO_USDC = "micro_usdc", "µUSDC"
    CREDIT_UNIT = "credit_unit", "credit unit"


class Bucket(models.TextChoices):
    AVAILABLE = "available"
    HELD = "held"


class RoundingDirection(models.TextChoices):
    CEIL = "ceil"
    FLOOR = "floor"


class JournalEntry(models.Model):
    """One money movement: postings that sum to zero per denomination."""

    billing_entry = models.ForeignKey(
        BillingEntry, null=True, blank=True, on_delete=models.PROTECT, related_name="journal_entries"
    )
    event_type = models.CharField(max_length=64)
    correlation_id = models.CharField(max_length=128)
    exchange_rate = models.DecimalField(max_digits=18, decimal_places=8, null=True, blank=True)
    rounding_direction = models.CharField(max_length=5, choices=RoundingDirection.choices, blank=True, default="")
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001 - NULL: no key
    created_at = models.DateTimeField()

    class Meta:
        verbose_name_plural = "journal entries"
        # Time ranges (revenue per day, statements): a BRIN index costs almost nothing per insert
        # on this append-mostly, time-ordered table (bench/index_cost.py measures it).
        indexes = [BrinIndex(fields=["created_at"], autosummarize=True, name="billing_journal_created_brin")]
        constraints = [
            # A mint retried by a client or a redelivered task must not credit twice.
            models.UniqueConstraint(
                fields=["idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="billing_journalentry_idempotency_key_uniq",
            ),
        ]

    def __str__(self) -> str:
        return f"journal {self.pk} {self.event_type}"


class Posting(models.Model):
    """A signed change of one account bucket; positive credits, negative debits."""

    journal_entry = models.ForeignKey(JournalEntry, on_delete=models.PROTECT, related_name="postings")
    # Covered by billing_posting_account_idx (account_id, journal_entry_id): an account's postings
    # in journal order (statements, recent movements); one index less per posting.
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="postings", db_index=False)
    bucket = models.CharField(max_length=10, choices=Bucket.choices)
    delta = models.BigIntegerField()
    denomination = models.CharField(max_length=12, choices=Denomination.choices, default=Denomination.MICRO_USD)

    class Meta:
        constraints = [
            # A zero posting says nothing and hides bugs in posting rules.
            models.CheckConstraint(condition=~Q(delta=0), name="billing_posting_delta_non_zero"),
        ]
        indexes = [models.Index(fields=["account", "journal_entry"], name="billing_posting_account_idx")]

    def __str__(self) -> str:
        return f"{self.account_id}:{self.bucket} {self.delta:+d} {self.denomination}"


class SpendPolicy(models.Model):
    """An agent's budget rules beside its daily cap, checked in the reserve's own transaction.

    Each rule is optional (NULL: no limit). The rolling hour is the last 3,600 s of the
    account's entries by creation: a request is one reserve, its spend is its hold while held,
    its actual cost once charged, nothing once released or voided.
    """

    account = models.OneToOneField(Account, on_delete=models.PROTECT, primary_key=True, related_name="spend_policy")
    per_request_max = models.BigIntegerField(null=True, blank=True)  # µUSD one hold may reach (extends included)
    hourly_spend_limit = models.BigIntegerField(null=True, blank=True)  # µUSD per rolling hour
    hourly_request_limit = models.IntegerField(null=True, blank=True)  # reserves per rolling hour
    # NULL: any model; otherwise only metered reserves of these models (a raw estimate is refused).
    allowed_models = ArrayField(models.CharField(max_length=100), null=True, blank=True)
    updated_at = models.DateTimeField()
    updated_by = models.CharField(max_length=150)

    class Meta:
        verbose_name_plural = "spend policies"
        constraints = [
            models.CheckConstraint(
                condition=(Q(per_request_max__isnull=True) | Q(per_request_max__gte=1))
                & (Q(hourly_spend_limit__isnull=True) | Q(hourly_spend_limit__gte=1))
                & (Q(hourly_request_limit__isnull=True) | Q(hourly_request_limit__gte=1)),
                name="billing_spendpolicy_limits_positive",
            ),
        ]

    def __str__(self) -> str:
        return f"policy of account {self.account_id}"


class DailySpend(models.Model):
    """What an agent account spent and holds on one UTC day (the cap's truth).

    Updated in the same transaction as the reserve/commit/release that
    changes it, so the cap check is atomic with the balance check. A hold
    counts on the day it was reserved, and so does its commit.
    """

    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="daily_spend")
    day = models.DateField()
    spent = models.BigIntegerField(default=0)
    held = models.BigIntegerField(default=0)
    low_balance_notified_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["account", "day"], name="billing_dailyspend_account_day_uniq"),
            # A release counted twice would make room under the cap.
            models.CheckConstraint(condition=Q(spent__gte=0) & Q(held__gte=0), name="billing_dailyspend_non_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.account_id} {self.day}: spent {self.spent}, held {self.held}"


class Subscription(models.Model):
    """A community's paid tier, moved only forward by provider events."""

    class Tier(models.TextChoices):
        STARTER = "starter"
        BASIC = "basic"
        PREMIUM = "premium"
        EXCLUSIVE = "exclusive"
        ELITE = "elite"
        ENTERPRISE = "enterprise"

    class Status(models.TextChoices):
        ACTIVE = "active"
        PAST_DUE = "past_due"
        CANCELED = "canceled"
        TRIALING = "trialing"
        UNPAID = "unpaid"

    community_id = models.CharField(max_length=128, unique=True)
    payment_subscription_id = models.CharField(max_length=128, null=True, blank=True, unique=True)
    payment_customer_id = models.CharField(max_length=128, blank=True, default="")
    payment_provider = models.CharField(max_length=16)
    tier = models.CharField(max_length=12, choices=Tier.choices, default=Tier.STARTER)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    grace_until = models.DateTimeField(null=True, blank=True)
    current_period_start = models.DateTimeField(null=True, blank=True)
    current_period_end = models.DateTimeField(null=True, blank=True)
    # When the provider says the last applied event happened: older events are ignored.
    last_event_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.community_id}: {self.tier} ({self.status})"


class BoostPurchase(models.Model):
    payment_id = models.CharField(max_length=128, unique=True)
    member_id = models.CharField(max_length=128)
    community_id = models.CharField(max_length=128)
    months = models.PositiveIntegerField()
    amount_paid_cents = models.BigIntegerField()
    expires_at = models.DateTimeField()
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(months__gt=0), name="billing_boostpurchase_months_positive"),
            models.CheckConstraint(
                condition=Q(amount_paid_cents__gte=0), name="billing_boostpurchase_amount_non_negative"
            ),
        ]
        indexes = [models.Index(fields=["community_id", "expires_at"], name="billing_boost_active_idx")]

    def __str__(self) -> str:
        return f"boost {self.member_id}@{self.community_id} until {self.expires_at:%Y-%m-%d}"


class BadgePurchase(models.Model):
    member_id = models.CharField(max_length=128, unique=True)  # one badge per member
    payment_id = models.CharField(max_length=128)
    display_on_discord = models.BooleanField(default=True)
    display_on_telegram = models.BooleanField(default=False)
    badge_style = models.CharField(max_length=10, default="default")
    created_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"badge {self.member_id}"


class FinalizeDeadLetter(BillingEntry):
    """The finalize dead letters (FINALIZE_FAILED entries), as their own admin list."""

    class Meta:
        proxy = True
        verbose_name = "finalize dead letter"


class LedgerSnapshot(models.Model):
    """Open holds every five minutes (the dashboard's 24-hour chart), written by the metrics job.

    One row per five-minute bucket (``at`` is the bucket's start; a second run of the job
    inserts nothing); rows older than 35 days are trimmed by the same job.
    """

    at = models.DateTimeField(unique=True)
    open_holds = models.BigIntegerField()
    held = models.BigIntegerField()

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.open_holds} holds"


OUTBOUND_EVENT_TYPES = ("balance.low", "hold.expired", "payment.received", "credit_note.issued", "entry.voided")


class WebhookEndpoint(models.Model):
    """Where an account is told about its events (outbound webhooks, Standard Webhooks signed).

    The signing secret (``whsec_`` + base64 of 32 random bytes) is shown once when created or
    rotated; it is stored as is, since every delivery is signed with it. After a rotation the
    previous secret still signs (a second signature) until ``previous_secret_until``.
    """

    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="webhook_endpoints")
    url = models.URLField(max_length=2000)
    event_types = ArrayField(models.CharField(max_length=32))
    secret = models.CharField(max_length=80)
    previous_secret = models.CharField(max_length=80, blank=True, default="")
    previous_secret_until = models.DateTimeField(null=True, blank=True)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["account"], condition=Q(active=True), name="billing_endpoint_active_idx")]
        constraints = [
            models.CheckConstraint(
                condition=Q(event_types__contained_by=list(OUTBOUND_EVENT_TYPES)) & ~Q(event_types=[]),
                name="billing_webhookendpoint_event_types_known",
            ),
        ]

    def __str__(self) -> str:
        return f"endpoint {self.pk} of account {self.account_id}: {self.url}"


class WebhookDelivery(models.Model):
    """One event for one endpoint: the outbox row, written in the event's own transaction.

    The table is the delivery queue: ``next_attempt_at`` says when a worker may try (a claim
    pushes it one lease ahead), retried with backoff for 24 hours, then ``failed``.
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        FAILED = "failed"

    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.PROTECT, related_name="deliveries")
    event_id = models.CharField(max_length=40)  # the webhook-id header: one per event and endpoint
    event_type = models.CharField(max_length=32)
    payload = models.JSONField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.IntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True, default="")
    created_at = models.DateTimeField()
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "webhook deliveries"
        indexes = [
            models.Index(fields=["next_attempt_at"], condition=Q(status="pending"), name="billing_delivery_due_idx"),
            models.Index(fields=["endpoint", "created_at"], name="billing_delivery_endpoint_idx"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["endpoint", "event_id"], name="billing_webhookdelivery_once"),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} {self.event_id} → endpoint {self.endpoint_id} ({self.status})"
