"""Signed receipts: a compact JWS (ES256, finn's token key, its ``kid`` in ``/.well-known/jwks.json``).

A receipt says what finn charged and where that is written down: the entry (or x402 payment),
account, amounts in their currency unit, the price version and usage of a metered entry, the
sequence of the audit row that recorded the charge, and the audit hash chain's head at signing
(its sequence and hash: the chain is linked a minute behind the writes, so the head is at or
before the recorded row; ``audit_verify`` later proves the row is in the chain the head ends).
A customer verifies one offline with any JOSE library and the JWKS (README: Signed receipts).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import jwt
from django.db import connection

from billing.models import BillingEntry
from billing.states import EntryState
from credits.models import X402Payment, X402Quote
from credits.tokens import ALGORITHM, keyring
from finn import clock
from finn.audit_chain import chain_head as audit_chain_head
from finn.errors import Conflict

ISSUER = "finn"
HEADER_TYPE = "finn-receipt+jwt"
_HEAD_SECONDS = 5.0  # the chain head is shared by every receipt signed meanwhile
_head_lock = threading.Lock()
_head: tuple[float, dict[str, Any]] | None = None
_CHARGE_EVENTS = {
    EntryState.VOIDED: ("billing_void",),
    EntryState.COMMITTED: ("billing_commit",),
    EntryState.FINALIZE_PENDING: ("billing_commit",),
    EntryState.FINALIZE_FAILED: ("billing_commit",),
    EntryState.FINALIZE_ACKED: ("billing_commit",),
}


class NotCharged(Conflict):
    code = "not_charged"


def chain_head() -> dict[str, Any]:
    """The newest linked audit row (sequence, hash), read at most every 5 s per process."""
    global _head
    seen = _head
    if seen is not None and time.monotonic() - seen[0] < _HEAD_SECONDS:
        return seen[1]
    sequence, digest = audit_chain_head()
    head = {"sequence": sequence, "hash": digest}
    with _head_lock:
        _head = (time.monotonic(), head)
    return head


def receipt_sign(claims: dict[str, Any]) -> str:
    ring = keyring()
    body = {"iss": ISSUER, "iat": int(clock.time()), **claims}
    return jwt.encode(
        body, ring.signing_key, algorithm=ALGORITHM, headers={"kid": ring.signing_kid, "typ": HEADER_TYPE}
    )


def _audit_row(entry_id: str, events: tuple[str, ...]) -> tuple[int, str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT sequence, event_type FROM finn_auditevent WHERE billing_entry_id = %s AND event_type = ANY(%s)"
            " ORDER BY sequence DESC LIMIT 1",
            [entry_id, list(events)],
        )
        row = cursor.fetchone()
    if row is None:  # pragma: no cover - every charge writes its audit row in its transaction
        raise NotCharged(f"billing entry {entry_id} has no recorded charge")
    return int(row[0]), str(row[1])


def entry_receipt_claims(entry: BillingEntry, *, commit_sequence: int | None = None) -> dict[str, Any]:
    """``commit_sequence``: the commit's audit row as the commit itself answered it (no query)."""
    events = _CHARGE_EVENTS.get(EntryState(entry.state))
    if events is None:
        raise NotCharged(f"billing entry {entry.id} is {entry.state}: nothing was charged, so there is no receipt")
    if commit_sequence is not None and events == ("billing_commit",):
        sequence, event_type = commit_sequence, "billing_commit"
    else:
        sequence, event_type = _audit_row(entry.id, events)
    actual = int(entry.actual_cost or 0)
    voided = entry.state == EntryState.VOIDED
    usage = (
        None
        if entry.usage_input_tokens is None
        else {"input_tokens": entry.usage_input_tokens, "output_tokens": entry.usage_output_tokens}
    )
    return {
        "sub": str(entry.account_id),
        "jti": f"{entry.id}:{event_type}",
        "kind": "billing_entry",
        "event": "void" if voided else "commit",
        "entry_id": entry.id,
        "account_id": entry.account_id,
        "currency_unit": "micro_usd",
        "amounts": {
            "estimated_cost": entry.estimated_cost,
            "actual_cost": actual,
            "refunded": actual if voided else entry.estimated_cost - min(actual, entry.estimated_cost),
            "charged": 0 if voided else actual,
        },
        "model": entry.model or None,
        "price_version": entry.price_version,
        "usage": usage,
        "audit": {"sequence": sequence, "event_type": event_type, "chain_head": chain_head()},
    }


def entry_receipt(entry: BillingEntry, *, commit_sequence: int | None = None) -> str:
    """The receipt of a charged (or voided) entry; 409 ``not_charged`` for a hold or a release."""
    return receipt_sign(entry_receipt_claims(entry, commit_sequence=commit_sequence))


def payment_receipt(
    payment: X402Payment, quote: X402Quote, charge: dict[str, Any] | None, *, audit_sequence: int
) -> str:
    """An x402 payment's receipt: what the payer paid on chain, what the call cost, the credit note."""
    charge = charge or {}
    return receipt_sign(
        {
            "sub": payment.payer,
            "jti": f"x402:{payment.pk}",
            "kind": "x402_payment",
            "event": "x402_payment",
            "payment_id": payment.pk,
            "quote_id": quote.pk,
            "purpose": quote.purpose,
            "payer": payment.payer,
            "pay_to": payment.pay_to,
            "network": payment.network,
            "asset": payment.asset,
            "tx_hash": payment.tx_hash or None,
            "currency_unit": "micro_usdc",
            "scheme": payment.scheme,
            "amounts": {
                # upto moved what the call cost (at most the permit); exact, the authorization's value
                "paid": payment.settle_amount if payment.scheme == "upto" else payment.amount,
                "quoted": quote.gross_amount,
                "credit_applied": quote.credit_applied,
                "actual": charge.get("actual"),
            },
            "credit_note": charge.get("credit_note"),
            "model": quote.model or None,
            "audit": {"sequence": audit_sequence, "event_type": "x402_payment_completed", "chain_head": chain_head()},
        }
    )
