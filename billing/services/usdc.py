"""USDC received: credit minted from an on-chain payment, x402 revenue and credit notes.

Journals never mix denominations: µUSDC legs balance through ``system:fx_clearing`` and
µUSD legs on the other side; one conversion (``usd_of``: ``billing.units`` rounded down: revenue and credit
are never recognized above what was paid). These run inside the caller's transaction.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from billing.models import (
    Bucket,
    Denomination,
    RoundingDirection,
)
from billing.results import MintResult
from billing.services.ledger import (
    SYSTEM_CREDIT_NOTES,
    SYSTEM_FX_CLEARING,
    SYSTEM_REVENUE,
    TREASURY_USDC_RECEIVED,
    _credit_available,
    _post,
    _require_transaction,
    _validate_amount,
    system_account_id,
)
from billing.units import Rounding, micro_usdc_to_micro_usd
from finn.audit import audit_append


def credit_mint_from_usdc(
    *,
    account_id: int,
    amount_micro_usdc: int,
    usd_per_usdc: Decimal,
    idempotency_key: str,
    correlation_id: str,
    now: datetime,
    actor: str = "",
    reason: str = "",
    details: dict[str, Any] | None = None,
) -> MintResult:
    """Credit an account for USDC received; the caller holds the (durable) transaction.

    The journal never mixes denominations: treasury -µUSDC / FX clearing
    +µUSDC, FX clearing -µUSD / account +µUSD, so each denomination sums to
    zero. µUSD is rounded down (never credit more than was paid).
    """
    _require_transaction("credit_mint_from_usdc")
    _validate_amount("amount_micro_usdc", amount_micro_usdc)
    credited = usd_of(amount_micro_usdc, usd_per_usdc)
    _validate_amount("credited", credited)
    clearing = system_account_id(SYSTEM_FX_CLEARING)
    journal_id = _post(
        event_type="credit_mint",
        correlation_id=correlation_id,
        legs=[
            (system_account_id(TREASURY_USDC_RECEIVED), Bucket.AVAILABLE, -amount_micro_usdc, Denomination.MICRO_USDC),
            (clearing, Bucket.AVAILABLE, amount_micro_usdc, Denomination.MICRO_USDC),
            (clearing, Bucket.AVAILABLE, -credited, Denomination.MICRO_USD),
            (account_id, Bucket.AVAILABLE, credited, Denomination.MICRO_USD),
        ],
        idempotency_key=idempotency_key,
        exchange_rate=usd_per_usdc,
        rounding_direction=RoundingDirection.FLOOR,
        now=now,
    )
    balance = _credit_available(account_id=account_id, amount=credited)
    audit_append(
        event_type="credit_mint",
        payload={
            "account_id": str(account_id),
            "amount": str(credited),
            "amount_micro_usdc": str(amount_micro_usdc),
            "usd_per_usdc": str(usd_per_usdc),
            "journal_entry_id": str(journal_id),
            **(details or {}),
        },
        correlation_id=correlation_id,
        now=now,
        account_id=account_id,
        actor=actor,
        reason=reason,
    )
    return MintResult(journal_entry_id=journal_id, balance=balance)


def usd_of(amount_micro_usdc: int, usd_per_usdc: Decimal) -> int:
    """µUSDC → µUSD, rounded down (revenue is never recognized above what was paid)."""
    return micro_usdc_to_micro_usd(amount_micro_usdc, rounding=Rounding.FLOOR, usd_per_usdc=usd_per_usdc)


def _x402_journal(
    *,
    event_type: str,
    correlation_id: str,
    usdc_legs: list[tuple[str, int]],
    usd_to_revenue: int,
    usd_per_usdc: Decimal,
    idempotency_key: str,
    now: datetime,
) -> int:
    """One journal: the µUSDC legs balance through FX clearing, and FX clearing ↔ revenue in µUSD."""
    clearing = system_account_id(SYSTEM_FX_CLEARING)
    usdc_total = sum(delta for _, delta in usdc_legs)
    legs: list[tuple[Any, ...]] = [
        *[(system_account_id(code), Bucket.AVAILABLE, delta, Denomination.MICRO_USDC) for code, delta in usdc_legs],
        (clearing, Bucket.AVAILABLE, -usdc_total, Denomination.MICRO_USDC),
        (clearing, Bucket.AVAILABLE, -usd_to_revenue, Denomination.MICRO_USD),
        (system_account_id(SYSTEM_REVENUE), Bucket.AVAILABLE, usd_to_revenue, Denomination.MICRO_USD),
    ]
    return _post(
        event_type=event_type,
        correlation_id=correlation_id,
        legs=legs,
        idempotency_key=idempotency_key,
        exchange_rate=usd_per_usdc,
        rounding_direction=RoundingDirection.FLOOR,
        now=now,
    )


def x402_payment_post(*, payment_id: str, received: int, credit_used: int, usd_per_usdc: Decimal, now: datetime) -> int:
    """A settled x402 payment: µUSDC received (plus credit notes used) becomes revenue."""
    _require_transaction("x402_payment_post")
    _validate_amount("received", received)
    _validate_amount("credit_used", credit_used, allow_zero=True)
    return _x402_journal(
        event_type="x402_payment",
        correlation_id=payment_id,
        usdc_legs=[(TREASURY_USDC_RECEIVED, -received), (SYSTEM_CREDIT_NOTES, -credit_used)],
        usd_to_revenue=usd_of(received + credit_used, usd_per_usdc),
        usd_per_usdc=usd_per_usdc,
        idempotency_key=f"x402:payment:{payment_id}",
        now=now,
    )


def x402_credit_note_post(
    *, note_id: str, amount: int, usd_per_usdc: Decimal, now: datetime, expired: bool = False
) -> int:
    """A credit note owed to a wallet: revenue → the credit-notes liability.

    ``expired=True`` is the way back: what is left of an expired note returns to revenue.
    """
    _require_transaction("x402_credit_note_post")
    _validate_amount("amount", amount)
    sign = -1 if expired else 1
    suffix = "_expired" if expired else ""
    return _x402_journal(
        event_type=f"x402_credit_note{suffix}",
        correlation_id=note_id,
        usdc_legs=[(SYSTEM_CREDIT_NOTES, sign * amount)],
        usd_to_revenue=-sign * usd_of(amount, usd_per_usdc),
        usd_per_usdc=usd_per_usdc,
        idempotency_key=f"x402:credit_note{suffix}:{note_id}",
        now=now,
    )
