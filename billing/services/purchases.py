"""Boosts and badges: recorded from provider webhooks, or paid from prepaid credit.

Paid from credit: under the member's distributed lock (Redis down → 503, fail closed) and a
PostgreSQL advisory lock, in one durable transaction, once per idempotency key.
"""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Any

import redis
from django.conf import settings
from django.db import IntegrityError, transaction
from ulid import ULID

from billing.errors import (
    AccountFrozen,
    AlreadyPurchased,
    IdempotencyKeyReused,
    InsufficientFunds,
    PurchaseInProgress,
)
from billing.metrics import (
    counted,
)
from billing.models import (
    Account,
    BadgePurchase,
    BoostPurchase,
    Bucket,
    JournalEntry,
    Posting,
)
from billing.results import Balance, PurchaseResult
from billing.selectors import account_balance
from billing.services.daily_caps import _daily_count, utc_day
from billing.services.ledger import (
    SYSTEM_REVENUE,
    _account_apply,
    _post,
    _require_transaction,
    _validate_amount,
    system_account_id,
)
from billing.services.subscriptions import _entitlements_invalidate
from finn.audit import audit_append
from finn.db import violates
from finn.degradation import redis_guard
from finn.errors import InvalidRequest
from finn.locks import lock_acquire, lock_release, xact_lock


def _add_months(moment: datetime, months: int) -> datetime:
    """Calendar months; the day is clamped to the target month's last day."""
    month_index = moment.month - 1 + months
    year, month = moment.year + month_index // 12, month_index % 12 + 1
    last_day = [
        31,
        29 if (year % 4 == 0 and year % 100 != 0) or year % 400 == 0 else 28,
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ][month - 1]
    return moment.replace(year=year, month=month, day=min(moment.day, last_day))


def boost_purchase_record(
    *, payment_id: str, member_id: str, community_id: str, months: int, amount_paid_cents: int, now: datetime
) -> str:
    """A boost stacks after the member's active one (calendar months); once per payment."""
    _require_transaction("boost_purchase_record")
    if BoostPurchase.objects.filter(payment_id=payment_id).exists():
        return "already_recorded"  # the unique payment_id below is the real guard
    active = (
        BoostPurchase.objects.filter(member_id=member_id, community_id=community_id, expires_at__gt=now)
        .order_by("-expires_at")
        .first()
    )
    start = active.expires_at if active else now
    BoostPurchase.objects.create(
        payment_id=payment_id,
        member_id=member_id,
        community_id=community_id,
        months=months,
        amount_paid_cents=amount_paid_cents,
        expires_at=_add_months(start, months),
        created_at=now,
    )
    audit_append(
        event_type="boost_purchased",
        payload={"community_id": community_id, "member_id": member_id, "months": months, "payment_id": payment_id},
        correlation_id=payment_id,
        now=now,
    )
    _entitlements_invalidate(community_id)
    return "applied"


def badge_purchase_record(*, member_id: str, payment_id: str, now: datetime) -> str:
    """One badge per member, with default display settings."""
    _require_transaction("badge_purchase_record")
    if BadgePurchase.objects.filter(member_id=member_id).exists():
        return "already_recorded"
    BadgePurchase.objects.create(member_id=member_id, payment_id=payment_id, created_at=now)
    audit_append(
        event_type="badge_purchased",
        payload={"member_id": member_id, "payment_id": payment_id},
        correlation_id=payment_id,
        now=now,
    )
    return "applied"


BOOST_BUNDLE_CENTS = {1: 499, 3: 1347, 6: 2394, 12: 4190}


MICRO_USD_PER_CENT = 10_000


PURCHASE_LOCK_SECONDS = 60


_MEMBER_ID_MAX = 128


def boost_price(months: int) -> int:
    """µUSD for a bundle of ``months`` (the seeds' cent prices, exactly)."""
    if months not in BOOST_BUNDLE_CENTS:
        raise InvalidRequest(
            "months must be one of the bundles 1, 3, 6 or 12",
            reason="invalid_months",
            allowed=sorted(BOOST_BUNDLE_CENTS),
        )
    return BOOST_BUNDLE_CENTS[months] * MICRO_USD_PER_CENT


def badge_price() -> int:
    price = int(settings.BADGE_PRICE_MICRO_USD)
    _validate_amount("badge price", price)
    return price


def _validate_member_ref(name: str, value: str) -> None:
    if not value or len(value) > _MEMBER_ID_MAX or not value.isprintable():
        raise InvalidRequest(f"{name} must be 1-{_MEMBER_ID_MAX} printable characters", reason=f"invalid_{name}")


@contextlib.contextmanager
def _member_purchase_lock(member_id: str) -> Any:
    """The distributed per-member purchase lock; no Redis → 503 (fail closed)."""
    lock = redis_guard(
        "purchase_lock",
        lambda: lock_acquire(
            key=f"billing:lock:purchase:{member_id}",
            fence_key="billing:lock:purchase:fence",
            ttl_seconds=PURCHASE_LOCK_SECONDS,
        ),
    )
    if not lock.acquired:
        raise PurchaseInProgress("another purchase for this member is in progress; retry", member_id=member_id)
    try:
        yield lock
    finally:
        with contextlib.suppress(redis.RedisError, OSError):
            lock_release(key=lock.key, owner=lock.owner)


def _purchase_charge(
    *, account_id: int, amount: int, kind: str, member_id: str, idempotency_key: str, correlation_id: str, now: datetime
) -> tuple[int, Balance]:
    """Move ``amount`` from the account's available credit to revenue; the caller's transaction."""
    # The journal (with its unique idempotency key) first: a concurrent
    # duplicate waits on the index and fails before touching the account row.
    journal_id = _post(
        event_type=f"{kind}_purchase",
        correlation_id=correlation_id,
        legs=[(account_id, Bucket.AVAILABLE, -amount), (system_account_id(SYSTEM_REVENUE), Bucket.AVAILABLE, amount)],
        idempotency_key=idempotency_key,
        now=now,
    )
    balance = _account_apply(
        account_id=account_id,
        available_delta=-amount,
        held_delta=0,
        guard_sql="NOT reserves_frozen AND available + credit_limit >= %s",
        guard_params=(amount,),
    )
    if balance is None:
        current = account_balance(account_id=account_id)  # raises AccountNotFound
        if Account.objects.filter(pk=account_id, reserves_frozen=True).exists():
            raise AccountFrozen("spending on this account is frozen; contact support")
        raise InsufficientFunds(
            f"insufficient funds for this {kind}", available=current.available, held=current.held, required=amount
        )
    if balance.daily_cap is not None:
        _daily_count(
            account_id=account_id, day=utc_day(now), amount=amount, cap=balance.daily_cap, column="spent", what=kind
        )
    audit_append(
        event_type="credit_spend",
        payload={
            "account_id": str(account_id),
            "amount": str(amount),
            "journal_entry_id": str(journal_id),
            "kind": kind,
            "member_id": member_id,
        },
        correlation_id=correlation_id,
        now=now,
        account_id=account_id,
    )
    return journal_id, balance


@transaction.atomic(durable=True)
def _boost_purchase_txn(
    *, account_id: int, member_id: str, community_id: str, months: int, idempotency_key: str, now: datetime
) -> PurchaseResult:
    xact_lock(f"purchase:{member_id}")  # PostgreSQL serializes the member too (a Redis lock can expire)
    amount = boost_price(months)
    journal_id, balance = _purchase_charge(
        account_id=account_id,
        amount=amount,
        kind="boost",
        member_id=member_id,
        idempotency_key=idempotency_key,
        correlation_id=idempotency_key,
        now=now,
    )
    payment_id = f"credit:{journal_id}"
    boost_purchase_record(
        payment_id=payment_id,
        member_id=member_id,
        community_id=community_id,
        months=months,
        amount_paid_cents=BOOST_BUNDLE_CENTS[months],
        now=now,
    )
    expires_at = BoostPurchase.objects.only("expires_at").get(payment_id=payment_id).expires_at
    return PurchaseResult(
        kind="boost",
        payment_id=payment_id,
        journal_entry_id=journal_id,
        amount=amount,
        balance=balance,
        expires_at=expires_at,
    )


@transaction.atomic(durable=True)
def _badge_purchase_txn(*, account_id: int, member_id: str, idempotency_key: str, now: datetime) -> PurchaseResult:
    xact_lock(f"purchase:{member_id}")  # PostgreSQL serializes the member too (a Redis lock can expire)
    if BadgePurchase.objects.filter(member_id=member_id).exists():
        raise AlreadyPurchased("this member already has a badge", member_id=member_id)
    amount = badge_price()
    journal_id, balance = _purchase_charge(
        account_id=account_id,
        amount=amount,
        kind="badge",
        member_id=member_id,
        idempotency_key=idempotency_key,
        correlation_id=idempotency_key,
        now=now,
    )
    payment_id = f"credit:{journal_id}"
    badge_purchase_record(member_id=member_id, payment_id=payment_id, now=now)
    return PurchaseResult(
        kind="badge", payment_id=payment_id, journal_entry_id=journal_id, amount=amount, balance=balance
    )


def _purchase_replay(*, kind: str, account_id: int, idempotency_key: str) -> PurchaseResult:
    """The first purchase made with this key, or 422 if the key paid for something else."""
    first = JournalEntry.objects.get(idempotency_key=idempotency_key)
    debit = Posting.objects.filter(journal_entry=first, bucket=Bucket.AVAILABLE, delta__lt=0).first()
    if first.event_type != f"{kind}_purchase" or debit is None or debit.account_id != account_id:
        raise IdempotencyKeyReused("this idempotency key was used for a different request")
    payment_id = f"credit:{first.pk}"
    boost = BoostPurchase.objects.filter(payment_id=payment_id).first() if kind == "boost" else None
    return PurchaseResult(
        kind=kind,
        payment_id=payment_id,
        journal_entry_id=first.pk,
        amount=-debit.delta,
        balance=account_balance(account_id=account_id),
        expires_at=boost.expires_at if boost else None,
        replayed=True,
    )


def _purchase_key(kind: str, account_id: int, idempotency_key: str | None) -> str:
    return f"{kind}:{account_id}:{idempotency_key or ULID()}"


@counted("boost_purchase")
def boost_purchase_with_credit(
    *,
    account_id: int,
    member_id: str,
    community_id: str,
    months: int,
    idempotency_key: str | None,
    now: datetime,
) -> PurchaseResult:
    """Buy a boost bundle from prepaid credit: charge, stack after the active boost, audit.

    Under the member's distributed lock (Redis down → 503, fail closed) and
    in one transaction. Once per idempotency key: a repeat returns the first
    purchase and charges nothing.
    """
    _validate_member_ref("member_id", member_id)
    _validate_member_ref("community_id", community_id)
    boost_price(months)  # reject a bad bundle before taking the lock
    key = _purchase_key("boost", account_id, idempotency_key)
    with _member_purchase_lock(member_id):
        try:
            return _boost_purchase_txn(
                account_id=account_id,
                member_id=member_id,
                community_id=community_id,
                months=months,
                idempotency_key=key,
                now=now,
            )
        except IntegrityError as exc:
            if not violates(exc, "billing_journalentry_idempotency_key_uniq"):
                raise
    return _purchase_replay(kind="boost", account_id=account_id, idempotency_key=key)


@counted("badge_purchase")
def badge_purchase_with_credit(
    *, account_id: int, member_id: str, idempotency_key: str | None, now: datetime
) -> PurchaseResult:
    """Buy the member's badge from prepaid credit (one per member; a second is 409, uncharged)."""
    _validate_member_ref("member_id", member_id)
    key = _purchase_key("badge", account_id, idempotency_key)
    with _member_purchase_lock(member_id):
        try:
            return _badge_purchase_txn(account_id=account_id, member_id=member_id, idempotency_key=key, now=now)
        except IntegrityError as exc:
            if violates(exc, "billing_badgepurchase_member_id_key"):
                raise AlreadyPurchased("this member already has a badge", member_id=member_id) from exc
            if not violates(exc, "billing_journalentry_idempotency_key_uniq"):
                raise
    return _purchase_replay(kind="badge", account_id=account_id, idempotency_key=key)
