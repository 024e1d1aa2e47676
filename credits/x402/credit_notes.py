"""x402 step 4, credit notes: what a paid request did not use, owed to the payer's wallet.

µUSDC per wallet, capped (``CREDIT_CAP_MICRO_USDC``) under a per-wallet advisory lock,
applied to the wallet's next quote, expired back to revenue.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime, timedelta

import redis
from django.conf import settings
from django.db import connection, transaction
from ulid import ULID

from billing import services as billing_services
from credits.models import CreditNote, WalletIdentity, X402Quote
from credits.selectors import wallet_credit_balance
from credits.x402.protocol import (
    CREDIT_CAP_MICRO_USDC,
)
from finn.audit import audit_append
from finn.locks import xact_lock
from finn.redis import get_redis

CREDIT_NOTE_TTL = timedelta(days=7)


@dataclass(frozen=True)
class CreditApplication:
    reduced_amount: int
    credit_used: int
    remaining_credit: int


def apply_credit_notes(*, balance: int, required: int) -> CreditApplication:
    """The reference's applyCreditNotes: use min(balance, required) of the credit."""
    if balance < 0 or required < 0:
        raise ValueError("balance and required are non-negative integers")
    used = min(balance, required)
    return CreditApplication(reduced_amount=required - used, credit_used=used, remaining_credit=balance - used)


def _credit_cache_schedule(wallet: str, now: datetime) -> None:
    def write() -> None:
        with contextlib.suppress(redis.RedisError, OSError):
            balance = wallet_credit_balance(wallet=wallet, now=now)
            get_redis().set(f"credits:x402:credit:{wallet}", balance, ex=int(CREDIT_NOTE_TTL.total_seconds()))

    transaction.on_commit(write)


def _credit_note_issue(
    *, wallet: str, quote: X402Quote, quoted: int, actual: int, reason: str, now: datetime
) -> tuple[CreditNote | None, str]:
    """A note for quoted - actual, unless the wallet would pass the 1,000,000 USDC cap (audited)."""
    delta = quoted - actual
    if delta <= 0:
        return None, ""
    xact_lock(f"x402:credit:{wallet}")  # one writer of a wallet's notes at a time (cap check, use)
    balance = wallet_credit_balance(wallet=wallet, now=now)
    if balance + delta > CREDIT_CAP_MICRO_USDC:
        audit_append(
            event_type="x402_credit_note_refused",
            payload={"wallet": wallet, "delta": str(delta), "balance": str(balance), "cap": str(CREDIT_CAP_MICRO_USDC)},
            correlation_id=quote.pk,
            now=now,
            reason="credit_note_cap_exceeded",
        )
        return None, "credit_note_cap_exceeded"
    note = CreditNote.objects.create(
        id=f"cn_{ULID()}",
        wallet=wallet,
        amount=delta,
        remaining=delta,
        quote=quote,
        quoted_amount=quoted,
        actual_amount=actual,
        reason=reason,
        created_at=now,
        expires_at=now + CREDIT_NOTE_TTL,
    )
    journal_id = billing_services.x402_credit_note_post(
        note_id=note.pk, amount=delta, usd_per_usdc=settings.USD_USDC_RATE, now=now
    )
    audit_append(
        event_type="x402_credit_note",
        payload={
            "credit_note_id": note.pk,
            "wallet": wallet,
            "delta": str(delta),
            "quote_id": quote.pk,
            "journal_entry_id": str(journal_id),
        },
        correlation_id=quote.pk,
        now=now,
    )
    _credit_cache_schedule(wallet, now)
    account_id = WalletIdentity.objects.filter(address=wallet.lower()).values_list("account_id", flat=True).first()
    if account_id is not None:  # a wallet that signed in: its account's endpoints are told
        issued = {"credit_note_id": note.pk, "wallet": wallet, "amount_micro_usdc": delta,
                  "expires_at": note.expires_at.isoformat()}  # fmt: skip
        billing_services.outbound_events_record(
            [billing_services.OutboundEvent(account_id, "credit_note.issued", issued)], now=now
        )
    return note, ""


# Oldest-expiring notes first: each note gives what is still needed after the notes before it
# (running total), in one statement. The wallet's advisory lock serializes writers of its notes.
_CONSUME_SQL = """
WITH ordered AS (
  SELECT id, remaining,
         sum(remaining) OVER (ORDER BY expires_at, id) - remaining AS before
  FROM credits_creditnote
  WHERE wallet = %(wallet)s AND expires_at > %(now)s AND expired_at IS NULL AND remaining > 0
), taken AS (
  SELECT id, LEAST(remaining, %(amount)s - before) AS take FROM ordered WHERE before < %(amount)s
)
UPDATE credits_creditnote note SET remaining = note.remaining - taken.take
FROM taken WHERE note.id = taken.id
RETURNING taken.take
"""


def _credit_consume(*, wallet: str, amount: int, now: datetime) -> int:
    """Use up to ``amount`` of the wallet's credit, oldest-expiring notes first; returns what was used."""
    if amount <= 0:
        return 0
    xact_lock(f"x402:credit:{wallet}")  # one writer of a wallet's notes at a time (cap check, use)
    with connection.cursor() as cursor:
        cursor.execute(_CONSUME_SQL, {"wallet": wallet, "now": now, "amount": amount})
        used = sum(int(row[0]) for row in cursor.fetchall())
    _credit_cache_schedule(wallet, now)
    return used


def credit_notes_expire(*, now: datetime, batch_size: int = 500) -> int:
    """Expired notes' remaining credit returns to revenue (journal + audit), once each."""
    expired = 0
    while True:
        with transaction.atomic(durable=True):
            notes = list(
                CreditNote.objects.select_for_update(skip_locked=True)
                .filter(expires_at__lte=now, expired_at__isnull=True)
                .order_by("expires_at")[:batch_size]
            )
            for note in notes:
                if note.remaining > 0:
                    billing_services.x402_credit_note_post(
                        note_id=note.pk,
                        amount=note.remaining,
                        usd_per_usdc=settings.USD_USDC_RATE,
                        now=now,
                        expired=True,
                    )
                    audit_append(
                        event_type="x402_credit_note_expired",
                        payload={"credit_note_id": note.pk, "wallet": note.wallet, "remaining": str(note.remaining)},
                        correlation_id=note.pk,
                        now=now,
                    )
                CreditNote.objects.filter(pk=note.pk).update(expired_at=now, remaining=0)
        expired += len(notes)
        if len(notes) < batch_size:
            return expired
