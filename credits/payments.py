"""x402 payments: quotes, verification, settlement, paid work, credit notes (all writes).

One paid request goes through short transactions, each complete on its own:

1. ``x402_quote_create``: the offer of a 402 (row + audit; Redis copy on commit).
2. ``_payment_record``: the authorization, once (unique network/asset/payer/nonce), status
   ``pending``; the quote becomes ``used``.
3. settlement with the facilitator (HTTP, outside any transaction), then ``_payment_settled``:
   status ``settled``, tx hash, the journal (USDC received → FX clearing → revenue, or the
   credit-pack mint), credit notes used.
4. the paid work (inference, outside any transaction), then ``_payment_complete``: status
   ``completed`` with the stored answer and the credit note for what was not used.

A retried request with the same authorization finds its row and gets the first answer;
a ``failed`` settlement (nothing moved) may be retried; nothing settles twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import redis
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from ulid import ULID

from billing import services as billing_services
from billing.errors import InvalidTransition
from billing.metrics import rejected
from credits import facilitator
from credits.errors import SettlementInProgress, SettlementUnavailable, refuse
from credits.models import CreditNote, X402Payment, X402Quote
from credits.selectors import wallet_credit_balance
from credits.services import nonce_key
from credits.x402 import (
    CLOCK_SKEW_SECONDS,
    CREDIT_CAP_MICRO_USDC,
    DUST_MICRO_USDC,
    NETWORKS,
    PAYMENT_RESPONSE,
    X_PAYMENT_RESPONSE,
    DecodedPayment,
    Offer,
    current_network,
    payment_required_v1,
    requirement_v2,
    settle_response_header,
    signature_valid,
    verification_slot,
)
from finn.audit import audit_append
from finn.db import violates
from finn.degradation import redis_guard
from finn.guard import guard
from finn.locks import xact_lock
from finn.redis import get_redis
from finn.tracing import span

logger = logging.getLogger(__name__)

CREDIT_NOTE_TTL = timedelta(days=7)
STALE_SETTLED_SECONDS = 120  # a settled payment without an answer this old: the worker died mid-call


@dataclass(frozen=True)
class PaidAnswer:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]
    replayed: bool = False


def request_fingerprint(data: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


# --- credit notes (µUSDC per wallet) ------------------------------------------------


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


# --- quotes -----------------------------------------------------------------------


def offer_of(quote: X402Quote, description: str = "") -> Offer:
    return Offer(
        quote_id=quote.pk,
        network=quote.network,
        asset=quote.asset,
        pay_to=quote.pay_to,
        amount=quote.amount,
        max_timeout_seconds=quote.max_timeout_seconds,
        resource_url=quote.resource_url,
        description=description or ("paid inference" if quote.purpose == X402Quote.Purpose.INVOKE else "credit pack"),
    )


def x402_quote_create(
    *,
    purpose: str,
    gross_amount: int,
    resource_url: str,
    request_sha256: str,
    now: datetime,
    payer: str = "",
    model: str = "",
    max_tokens: int | None = None,
    account_id: int | None = None,
    pack_size: int | None = None,
) -> X402Quote:
    """Record the price a 402 offers. A named payer's credit notes reduce it (never below dust)."""
    network = current_network()
    gross = max(gross_amount, DUST_MICRO_USDC)
    credit = 0
    if payer and purpose == X402Quote.Purpose.INVOKE:
        balance = wallet_credit_balance(wallet=payer, now=now)
        credit = apply_credit_notes(balance=balance, required=gross - DUST_MICRO_USDC).credit_used
    with transaction.atomic(durable=True):
        quote = X402Quote.objects.create(
            id=f"q_{ULID()}",
            purpose=purpose,
            network=network.caip2,
            asset=network.usdc.lower(),
            pay_to=settings.X402_PAY_TO,
            amount=gross - credit,
            gross_amount=gross,
            credit_applied=credit,
            payer=payer,
            max_timeout_seconds=settings.X402_MAX_TIMEOUT_SECONDS,
            resource_url=resource_url,
            model=model,
            max_tokens=max_tokens,
            request_sha256=request_sha256,
            account_id=account_id,
            pack_size=pack_size,
            created_at=now,
            expires_at=now + timedelta(seconds=settings.X402_QUOTE_TTL_SECONDS),
        )
        audit_append(
            event_type="x402_quote",
            payload={
                "quote_id": quote.pk,
                "purpose": purpose,
                "model": model,
                "max_tokens": max_tokens,
                "amount": str(quote.amount),
                "gross_amount": str(gross),
                "credit_applied": str(credit),
            },
            correlation_id=quote.pk,
            now=now,
        )
        cached = json.dumps({"amount": str(quote.amount), "network": quote.network, "purpose": purpose})
        transaction.on_commit(lambda: _quote_cache(quote.pk, cached))
    return quote


def _quote_cache(quote_id: str, cached: str) -> None:
    with contextlib.suppress(redis.RedisError, OSError):
        get_redis().set(f"credits:x402:quote:{quote_id}", cached, ex=settings.X402_QUOTE_TTL_SECONDS)


def _requirement_dict(quote: X402Quote, version: int) -> dict[str, Any]:
    if version == 2:
        return dict(requirement_v2(offer_of(quote)).model_dump(mode="json", by_alias=True, exclude_none=True))
    return dict(payment_required_v1(offer_of(quote))["accepts"][0])


def _match_quote(decoded: DecodedPayment, *, purpose: str, request_sha256: str, now: datetime) -> X402Quote:
    """The outstanding quote this payment answers, matched exactly; else 402 quote_not_found."""
    auth = decoded.authorization
    quote: X402Quote | None = None
    if decoded.version == 2:
        extra = (decoded.accepted or {}).get("extra")
        quote_id = extra.get("quoteId") if isinstance(extra, dict) else None
        if isinstance(quote_id, str):
            quote = X402Quote.objects.filter(pk=quote_id).first()
        if quote is not None and decoded.accepted != _requirement_dict(quote, 2):
            quote = None
    else:
        # v1 payments echo no requirement: the quote of this very request for this amount.
        quote = (
            X402Quote.objects.filter(request_sha256=request_sha256, amount=auth.value, purpose=purpose)
            .order_by("-created_at")
            .first()
        )
    if quote is None or quote.purpose != purpose or quote.request_sha256 != request_sha256:
        raise refuse("quote_not_found", "no outstanding quote matches this payment; request a new one")
    if quote.expires_at <= now and not X402Payment.objects.filter(quote=quote).exists():
        raise refuse("quote_not_found", "the quote has expired; request a new one")
    return quote


def _check(decoded: DecodedPayment, quote: X402Quote, *, now: datetime) -> None:
    """The issue's checks, in its order; each failure is a 402 with its own code."""
    auth = decoded.authorization
    network = current_network()
    if decoded.network != quote.network or quote.network != network.caip2:
        raise refuse("invalid_chain", f"payments are accepted on {network.caip2} only")
    if quote.asset.lower() != network.usdc.lower():
        raise refuse("invalid_token", f"only USDC ({network.usdc}) is accepted")
    if auth.to != settings.X402_PAY_TO or auth.to != quote.pay_to:
        raise refuse("invalid_recipient", "the authorization does not pay finn's treasury")
    if auth.value < quote.amount:
        raise refuse("insufficient_payment", f"payment {auth.value} < quoted {quote.amount}")
    ceiling = settings.X402_MAX_PAYMENT_MICRO_USDC
    if ceiling and auth.value > ceiling:
        raise refuse("payment_exceeds_ceiling", f"payment {auth.value} exceeds ceiling {ceiling}")
    if auth.value < DUST_MICRO_USDC:
        raise refuse("payment_too_small", f"payments below {DUST_MICRO_USDC} µUSDC are refused")
    moment = int(now.timestamp())
    if auth.valid_after > moment + CLOCK_SKEW_SECONDS:
        raise refuse("authorization_not_yet_valid", "the authorization is not valid yet")
    if auth.valid_before < moment + CLOCK_SKEW_SECONDS:
        raise refuse("authorization_expired", "the authorization has expired (or expires too soon to settle)")
    with verification_slot():
        valid = signature_valid(auth, NETWORKS[quote.network], quote.asset)
    if not valid:
        rejected("signature_invalid")
        raise refuse("invalid_signature", "the EIP-712 signature does not recover to the payer")


def _nonce_fast_path(decoded: DecodedPayment, quote: X402Quote) -> None:
    """Redis SET NX before the database: most replays stop here. Redis down → 503 (fail closed)."""
    auth = decoded.authorization
    key = "credits:nonce:x402:" + nonce_key(quote.network, quote.asset, auth.payer, auth.nonce)
    fresh = redis_guard("x402_nonce", lambda: get_redis().set(key, "1", nx=True, ex=60))
    if not fresh:
        raise refuse("nonce_reused", "this authorization's nonce was already used")


# --- the payment pipeline -------------------------------------------------------------


def _find_payment(decoded: DecodedPayment, quote: X402Quote) -> X402Payment | None:
    auth = decoded.authorization
    return X402Payment.objects.filter(
        network=quote.network, asset=quote.asset, payer=auth.payer, nonce=auth.nonce
    ).first()


def _payment_record(decoded: DecodedPayment, quote: X402Quote, *, now: datetime) -> X402Payment:
    auth = decoded.authorization
    with transaction.atomic(durable=True):
        locked = X402Quote.objects.select_for_update().get(pk=quote.pk)
        if locked.status != X402Quote.Status.OPEN:
            raise refuse("quote_not_found", "this quote was already paid; request a new one")
        if locked.payer and locked.payer != auth.payer:
            raise refuse("quote_not_found", "this quote was made for another wallet")
        payment = X402Payment.objects.create(
            id=f"pay_{ULID()}",
            quote=locked,
            x402_version=decoded.version,
            network=quote.network,
            asset=quote.asset,
            payer=auth.payer,
            pay_to=auth.to,
            amount=auth.value,
            nonce=auth.nonce,
            valid_after=auth.valid_after,
            valid_before=auth.valid_before,
            signature=auth.signature,
            status=X402Payment.Status.PENDING,
            attempts=1,
            created_at=now,
            updated_at=now,
        )
        X402Quote.objects.filter(pk=quote.pk).update(status=X402Quote.Status.USED)
        audit_append(
            event_type="x402_payment",
            payload={"payment_id": payment.pk, "quote_id": quote.pk, "from": auth.payer, "amount": str(auth.value)},
            correlation_id=quote.pk,
            now=now,
        )
    return payment


def _move(payment_id: str, source: str, target: str, now: datetime, **fields: Any) -> bool:
    return bool(
        X402Payment.objects.filter(pk=payment_id, status=source).update(status=target, updated_at=now, **fields)
    )


def _payment_settled(payment: X402Payment, quote: X402Quote, *, tx_hash: str, now: datetime) -> None:
    """Funds moved: status, tx hash and the journal together (credit pack: the mint)."""
    with span("billing.finalize", payment_id=payment.pk), transaction.atomic(durable=True):
        if quote.purpose == X402Quote.Purpose.CREDIT_PACK:
            assert quote.account_id is not None
            with span("billing.ledger", event_type="credit_mint"):
                minted = billing_services.credit_mint_from_usdc(
                    account_id=quote.account_id,
                    amount_micro_usdc=payment.amount,
                    usd_per_usdc=settings.USD_USDC_RATE,
                    idempotency_key=f"x402:pack:{payment.pk}",
                    correlation_id=quote.pk,
                    now=now,
                    actor=payment.payer,
                    reason="x402 credit pack",
                    details={"payment_id": payment.pk, "tx_hash": tx_hash, "pack_size": quote.pack_size},
                )
            journal_id = minted.journal_entry_id
        else:
            used = _credit_consume(wallet=payment.payer, amount=quote.credit_applied, now=now)
            if used < quote.credit_applied:
                audit_append(
                    event_type="x402_credit_shortfall",
                    payload={"payment_id": payment.pk, "expected": str(quote.credit_applied), "used": str(used)},
                    correlation_id=quote.pk,
                    now=now,
                )
            with span("billing.ledger", event_type="x402_payment"):
                journal_id = billing_services.x402_payment_post(
                    payment_id=payment.pk,
                    received=payment.amount,
                    credit_used=used,
                    usd_per_usdc=settings.USD_USDC_RATE,
                    now=now,
                )
        if not _move(
            payment.pk,
            X402Payment.Status.PENDING,
            X402Payment.Status.SETTLED,
            now,
            tx_hash=tx_hash,
            journal_entry_id=journal_id,
            error="",
        ):
            raise InvalidTransition(payment.status, X402Payment.Status.SETTLED)
        audit_append(
            event_type="x402_settlement",
            payload={"payment_id": payment.pk, "quote_id": quote.pk, "tx_hash": tx_hash, "amount": str(payment.amount)},
            correlation_id=quote.pk,
            now=now,
        )


def _response_headers(payment: X402Payment, *, success: bool = True) -> dict[str, str]:
    header = settle_response_header(
        success=success,
        transaction=payment.tx_hash,
        network=payment.network,
        payer=payment.payer,
        amount=payment.amount,
    )
    name = PAYMENT_RESPONSE if payment.x402_version == 2 else X_PAYMENT_RESPONSE
    return {name: header, "Access-Control-Expose-Headers": f"{PAYMENT_RESPONSE}, {X_PAYMENT_RESPONSE}"}


def _payment_complete(
    payment_id: str, *, work: Callable[[X402Payment, X402Quote], tuple[int, dict[str, Any], int | None]], now: datetime
) -> PaidAnswer:
    """Run the paid work, then store its answer and the credit note in one transaction.

    ``work`` returns (status, body, actual µUSDC or None when the work failed).
    """
    payment = X402Payment.objects.select_related("quote").get(pk=payment_id)
    quote = payment.quote
    status, body, actual = work(payment, quote)
    completed_at = timezone.now()
    with transaction.atomic(durable=True):
        locked = X402Payment.objects.select_for_update().get(pk=payment_id)
        if locked.status == X402Payment.Status.COMPLETED:  # a concurrent completion won
            return PaidAnswer(
                locked.response_status or 200, dict(locked.response_body or {}), _response_headers(locked), True
            )
        if locked.status != X402Payment.Status.SETTLED:
            raise InvalidTransition(locked.status, X402Payment.Status.COMPLETED)
        note, refused = None, ""
        if quote.purpose == X402Quote.Purpose.INVOKE:
            charged = 0 if actual is None else min(actual, quote.gross_amount)
            guard(
                "x402_payment_covers_cost",
                payment.amount + quote.credit_applied >= charged,
                paid=payment.amount,
                credit=quote.credit_applied,
                cost=charged,
            )
            note, refused = _credit_note_issue(
                wallet=payment.payer,
                quote=quote,
                quoted=quote.gross_amount,
                actual=charged,
                reason="inference_failed" if actual is None else "unused_quote",
                now=completed_at,
            )
            receipt: dict[str, Any] = {
                "quoted": quote.gross_amount,
                "actual": charged,
                "credit_note": {"id": note.pk, "amount": note.amount} if note else None,
                "credit_balance": wallet_credit_balance(wallet=payment.payer, now=completed_at),
            }
            if refused:
                receipt["credit_note_refused"] = refused
            body = {**body, "receipt": receipt}
            if actual is None:
                body["credit_note"] = receipt["credit_note"]
        body = {**body, "payment_id": payment.pk, "quote_id": quote.pk}
        _move(
            payment_id,
            X402Payment.Status.SETTLED,
            X402Payment.Status.COMPLETED,
            completed_at,
            response_status=status,
            response_body=body,
        )
        audit_append(
            event_type="x402_payment_completed",
            payload={"payment_id": payment.pk, "status": status, "credit_note_id": note.pk if note else None},
            correlation_id=quote.pk,
            now=completed_at,
        )
    return PaidAnswer(status, body, _response_headers(payment))


def _settle(payment: X402Payment, quote: X402Quote, raw_payload: dict[str, Any], *, now: datetime) -> None:
    outcome = facilitator.settle(
        x402_version=payment.x402_version,
        payment_payload=raw_payload,
        requirements=_requirement_dict(quote, payment.x402_version),
    )
    if outcome.settled:
        _payment_settled(payment, quote, tx_hash=outcome.tx_hash, now=timezone.now())
        return
    _move(payment.pk, X402Payment.Status.PENDING, X402Payment.Status.FAILED, timezone.now(), error=outcome.reason[:300])
    if not settings.X402_FACILITATOR_URL or outcome.reason == "facilitator circuit open":
        raise SettlementUnavailable(f"payment settlement is unavailable ({outcome.reason}); retry later")
    raise refuse("settlement_failed", f"settlement failed: {outcome.reason}", payment_id=payment.pk)


def x402_pay(
    decoded: DecodedPayment,
    *,
    purpose: str,
    request_sha256: str,
    work: Callable[[X402Payment, X402Quote], tuple[int, dict[str, Any], int | None]],
    now: datetime,
) -> PaidAnswer:
    """Take one x402 payment from header to answer (see the module docstring).

    Traced (when on) as nested spans: x402.quote → x402.verify → x402.settle →
    billing.finalize → billing.ledger.
    """
    with span("x402.quote", purpose=purpose) as quote_span:
        quote = _match_quote(decoded, purpose=purpose, request_sha256=request_sha256, now=now)
        if quote_span is not None:
            quote_span.set_attribute("quote_id", quote.pk)
        with span("x402.verify", payer=decoded.authorization.payer):
            existing = _find_payment(decoded, quote)
            if existing is None:
                _check(decoded, quote, now=now)
                _nonce_fast_path(decoded, quote)
                try:
                    payment = _payment_record(decoded, quote, now=now)
                except IntegrityError as exc:
                    if not violates(exc, "credits_x402payment_authorization_uniq"):
                        raise
                    raise refuse("nonce_reused", "this authorization's nonce was already used") from None
            else:
                if existing.quote_id != quote.pk or existing.signature != decoded.authorization.signature:
                    raise refuse("nonce_reused", "this authorization's nonce was already used")
                payment = existing
                if payment.status == X402Payment.Status.COMPLETED:
                    return PaidAnswer(
                        payment.response_status or 200,
                        dict(payment.response_body or {}),
                        _response_headers(payment),
                        True,
                    )
                if payment.status == X402Payment.Status.PENDING:
                    raise SettlementInProgress()
                if payment.status == X402Payment.Status.SETTLED:
                    if (now - payment.updated_at).total_seconds() < STALE_SETTLED_SECONDS:
                        raise SettlementInProgress()
                    # The worker died between settlement and its answer: the wallet gets all of it back.
                    return _payment_complete(payment.pk, work=lambda p, q: _failed_work(), now=now)
                # FAILED: nothing moved; settle again (exclusive: only one retry wins the CAS).
                if not _move(
                    payment.pk,
                    X402Payment.Status.FAILED,
                    X402Payment.Status.PENDING,
                    now,
                    attempts=payment.attempts + 1,
                ):
                    raise SettlementInProgress()
            with span("x402.settle", payment_id=payment.pk):
                _settle(payment, quote, decoded.raw, now=now)
    return _payment_complete(payment.pk, work=work, now=now)


def _failed_work() -> tuple[int, dict[str, Any], int | None]:
    return (
        502,
        {"error": "Inference failed after settlement. A credit note has been issued.", "code": "inference_failed"},
        None,
    )
