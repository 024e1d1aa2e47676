"""x402 payments, the pipeline: quote → verify → settle → paid work → credit note (all writes).

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

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from ulid import ULID

from billing import services as billing_services
from billing.errors import InvalidTransition
from credits.errors import SettlementInProgress, SettlementUnavailable, refuse
from credits.models import X402Payment, X402Quote
from credits.receipts import payment_receipt
from credits.selectors import wallet_credit_balance
from credits.x402 import settle as facilitator
from credits.x402.credit_notes import _credit_consume, _credit_note_issue
from credits.x402.protocol import (
    PAYMENT_RESPONSE,
    X_PAYMENT_RESPONSE,
    DecodedPayment,
    settle_response_header,
)
from credits.x402.quotes import _requirement_dict
from credits.x402.verify import _check, _match_quote, _nonce_fast_path
from finn import clock
from finn.audit import audit_append
from finn.db import violates
from finn.guard import guard
from finn.tracing import span

STALE_SETTLED_SECONDS = 120  # a settled payment without an answer this old: the worker died mid-call


@dataclass(frozen=True)
class PaidAnswer:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]
    replayed: bool = False


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
    completed_at = clock.now()
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
        sequence = audit_append(
            event_type="x402_payment_completed",
            payload={"payment_id": payment.pk, "status": status, "credit_note_id": note.pk if note else None},
            correlation_id=quote.pk,
            now=completed_at,
        )
        # Stored with the answer: a replay answers the same receipt.
        body["signed_receipt"] = payment_receipt(payment, quote, body.get("receipt"), audit_sequence=sequence)
        _move(
            payment_id,
            X402Payment.Status.SETTLED,
            X402Payment.Status.COMPLETED,
            completed_at,
            response_status=status,
            response_body=body,
        )
    return PaidAnswer(status, body, _response_headers(payment))


def _settle(payment: X402Payment, quote: X402Quote, raw_payload: dict[str, Any], *, now: datetime) -> None:
    outcome = facilitator.settle(
        x402_version=payment.x402_version,
        payment_payload=raw_payload,
        requirements=_requirement_dict(quote, payment.x402_version),
    )
    if outcome.settled:
        _payment_settled(payment, quote, tx_hash=outcome.tx_hash, now=clock.now())
        return
    _move(payment.pk, X402Payment.Status.PENDING, X402Payment.Status.FAILED, clock.now(), error=outcome.reason[:300])
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
