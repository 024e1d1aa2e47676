"""Accounts: creation, credit minted from the treasury, reserves frozen."""

from __future__ import annotations

from datetime import datetime

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction

from billing.errors import (
    IdempotencyKeyReused,
)
from billing.metrics import (
    counted,
)
from billing.models import (
    Account,
    AccountKind,
    Bucket,
    JournalEntry,
    Posting,
)
from billing.results import MintResult
from billing.selectors import account_balance
from billing.services.ledger import (
    TREASURY_USDC_RECEIVED,
    _credit_available,
    _post,
    _require_transaction,
    _validate_amount,
    system_account_id,
)
from billing.services.outbound import OutboundEvent, outbound_events_record
from finn.audit import audit_append
from finn.db import violates
from finn.errors import InvalidRequest


def account_create(
    *,
    kind: str = AccountKind.USER,
    owner: User | None = None,
    name: str = "",
    credit_limit: int = 0,
    allow_overcapture: bool = False,
    daily_cap: int | None = None,
    refill_threshold: int | None = None,
) -> Account:
    if kind not in (AccountKind.USER, AccountKind.AGENT):
        raise InvalidRequest("kind must be 'user' or 'agent'", reason="invalid_kind")
    _validate_amount("credit_limit", credit_limit, allow_zero=True)
    for name_, value in (("daily_cap", daily_cap), ("refill_threshold", refill_threshold)):
        if value is not None:
            _validate_amount(name_, value, allow_zero=True)
    return Account.objects.create(
        kind=kind,
        owner=owner,
        name=name,
        credit_limit=credit_limit,
        allow_overcapture=allow_overcapture,
        daily_cap=daily_cap,
        refill_threshold=refill_threshold,
    )


def _account_credit_mint_body(
    *, account_id: int, amount: int, idempotency_key: str, correlation_id: str, actor: str, reason: str, now: datetime
) -> MintResult:
    treasury = system_account_id(TREASURY_USDC_RECEIVED)
    journal_id = _post(
        event_type="credit_mint",
        correlation_id=correlation_id,
        legs=[(treasury, Bucket.AVAILABLE, -amount), (account_id, Bucket.AVAILABLE, amount)],
        idempotency_key=idempotency_key,
        now=now,
    )
    balance = _credit_available(account_id=account_id, amount=amount)
    audit_append(
        event_type="credit_mint",
        payload={"account_id": str(account_id), "amount": str(amount), "journal_entry_id": str(journal_id)},
        correlation_id=correlation_id,
        now=now,
        account_id=account_id,
        actor=actor,
        reason=reason,
    )
    received = {"amount": amount, "journal_entry_id": journal_id, "available": balance.available}
    outbound_events_record([OutboundEvent(account_id, "payment.received", received)], now=now)
    return MintResult(journal_entry_id=journal_id, balance=balance)


_account_credit_mint_txn = transaction.atomic(durable=True)(_account_credit_mint_body)


@counted("credit_mint")
def account_credit_mint(
    *,
    account_id: int,
    amount: int,
    idempotency_key: str,
    correlation_id: str,
    now: datetime,
    actor: str = "",
    reason: str = "",
) -> MintResult:
    """Credit ``amount`` µUSD to an account from the treasury, once per key.

    A second call with the same idempotency key credits nothing and returns
    the first journal entry with the current balance.
    """
    _validate_amount("amount", amount)
    try:
        return _account_credit_mint_txn(
            account_id=account_id,
            amount=amount,
            idempotency_key=idempotency_key,
            correlation_id=correlation_id,
            actor=actor,
            reason=reason,
            now=now,
        )
    except IntegrityError as exc:
        if not violates(exc, "billing_journalentry_idempotency_key_uniq"):
            raise
    first = JournalEntry.objects.get(idempotency_key=idempotency_key)
    credited = Posting.objects.filter(journal_entry=first, bucket=Bucket.AVAILABLE, delta__gt=0).first()
    if credited is None or credited.account_id != account_id or credited.delta != amount:
        raise IdempotencyKeyReused(
            "this idempotency key was used for a different credit", idempotency_key=idempotency_key
        )
    return MintResult(journal_entry_id=first.pk, balance=account_balance(account_id=account_id), replayed=True)


@transaction.atomic(durable=True)
def account_reserves_freeze(*, account_id: int, reason: str, actor: str, now: datetime) -> bool:
    """Stop new reserves on an account (a reverted payment, say); audited."""
    changed = Account.objects.filter(pk=account_id, reserves_frozen=False).update(reserves_frozen=True)
    if changed:
        audit_append(
            event_type="account_reserves_frozen",
            payload={"account_id": str(account_id), "reason": reason},
            correlation_id=f"freeze:{account_id}",
            now=now,
            account_id=account_id,
            actor=actor,
            reason=reason,
        )
    return bool(changed)


def account_credit_mint_in_transaction(
    *, account_id: int, amount: int, idempotency_key: str, correlation_id: str, now: datetime, actor: str, reason: str
) -> MintResult | None:
    """The credit-mint posting inside the caller's transaction; None if this key already minted."""
    _require_transaction("account_credit_mint_in_transaction")
    _validate_amount("amount", amount)
    if JournalEntry.objects.filter(idempotency_key=idempotency_key).exists():
        return None  # the unique idempotency key is the guard against a race
    return _account_credit_mint_body(
        account_id=account_id,
        amount=amount,
        idempotency_key=idempotency_key,
        correlation_id=correlation_id,
        actor=actor,
        reason=reason,
        now=now,
    )
