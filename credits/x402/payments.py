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

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NoReturn

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from ulid import ULID

from billing import services as billing_services
from billing.errors import InvalidTransition
from credits.errors import SettlementInProgress, SettlementPending, SettlementUnavailable, refuse
from credits.metrics import x402_settlements_pending, x402_settlements_resolved_total
from credits.models import X402Payment, X402Quote
from credits.receipts import payment_receipt
from credits.selectors import wallet_credit_balance
from credits.x402 import onchain
from credits.x402 import settle as facilitator
from credits.x402.credit_notes import _credit_consume, _credit_note_issue
from credits.x402.protocol import (
    CLOCK_SKEW_SECONDS,
    DUST_MICRO_USDC,
    PAYMENT_RESPONSE,
    SCHEME_UPTO,
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

logger = logging.getLogger(__name__)
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
            payload=decoded.raw,
            scheme=auth.scheme,
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


def _payment_settled(
    payment: X402Payment,
    quote: X402Quote,
    *,
    tx_hash: str,
    now: datetime,
    source: str = X402Payment.Status.PENDING,
    awaiting_presentation: bool = False,
) -> None:
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
                    received=_moved(payment),
                    credit_used=used,
                    usd_per_usdc=settings.USD_USDC_RATE,
                    now=now,
                )
        if not _move(
            payment.pk,
            source,
            X402Payment.Status.SETTLED,
            now,
            tx_hash=tx_hash,
            journal_entry_id=journal_id,
            error="",
            awaiting_presentation=awaiting_presentation,
        ):
            raise InvalidTransition(payment.status, X402Payment.Status.SETTLED)
        audit_append(
            event_type="x402_settlement",
            payload={"payment_id": payment.pk, "quote_id": quote.pk, "tx_hash": tx_hash, "amount": str(payment.amount)},
            correlation_id=quote.pk,
            now=now,
        )


def _moved(payment: X402Payment) -> int:
    """µUSDC the settlement moved: the authorization's value (exact), or what the call cost (upto)."""
    if payment.scheme == SCHEME_UPTO:
        assert payment.settle_amount is not None
        return payment.settle_amount
    return payment.amount


def _stored_work(payment: X402Payment, quote: X402Quote) -> tuple[int, dict[str, Any], int | None]:
    """An upto call's answer, computed before it was settled and kept on the payment row."""
    return payment.response_status or 200, dict(payment.response_body or {}), payment.settle_amount


def _response_headers(payment: X402Payment, *, success: bool = True) -> dict[str, str]:
    header = settle_response_header(
        success=success,
        transaction=payment.tx_hash,
        network=payment.network,
        payer=payment.payer,
        amount=payment.amount,
    )
    if payment.scheme == SCHEME_UPTO and payment.settle_amount is not None:
        header = settle_response_header(
            success=success, transaction=payment.tx_hash, network=payment.network, payer=payment.payer,
            amount=payment.settle_amount,
        )  # fmt: skip
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
            # upto moved only what the call cost; exact moved the quote (the rest becomes a credit note).
            paid = _moved(payment)
            charged = 0 if actual is None else min(actual, paid + quote.credit_applied)
            guard(
                "x402_payment_covers_cost",
                paid + quote.credit_applied >= charged,
                paid=paid,
                credit=quote.credit_applied,
                cost=charged,
            )
            note, refused = _credit_note_issue(
                wallet=payment.payer,
                quote=quote,
                quoted=paid + quote.credit_applied,
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


def _settle(
    payment: X402Payment,
    quote: X402Quote,
    raw_payload: dict[str, Any],
    *,
    now: datetime,
    requirements: dict[str, Any] | None = None,
) -> None:
    outcome = facilitator.settle(
        x402_version=payment.x402_version,
        payment_payload=raw_payload,
        requirements=requirements or _requirement_dict(quote, payment.x402_version),
    )
    if outcome.settled:
        _payment_settled(payment, quote, tx_hash=outcome.tx_hash, now=clock.now())
        return
    if outcome.unknown:  # funds may have moved: never FAILED (a retry would be answered with a fresh 402)
        settlement_unknown_record(payment, quote, outcome, now=clock.now())
        raise SettlementPending(payment.pk)
    _settle_refused(payment, outcome)


def _settle_refused(payment: X402Payment, outcome: Any) -> NoReturn:
    """Nothing moved: the payment is FAILED (it may be presented again) and the caller is told why."""
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
                if payment.status == X402Payment.Status.SETTLEMENT_PENDING:
                    # Resolve it now if this presentation wins the lease; serve once it settled.
                    outcome = x402_settlement_resolve(payment.pk, now=clock.now(), serving=True)
                    if outcome == "not_settled":  # refused + not settled: nothing moved, paying again is safe
                        raise refuse("settlement_failed", "the payment never settled and its authorization expired")
                    if outcome != "settled":
                        raise SettlementPending(payment.pk)
                    return _payment_complete(payment.pk, work=_work_of(payment, work), now=now)
                if payment.status == X402Payment.Status.SETTLED and payment.awaiting_presentation:
                    # Settled by the resolver while nobody waited: this presentation is served (once).
                    if not X402Payment.objects.filter(pk=payment.pk, awaiting_presentation=True).update(
                        awaiting_presentation=False, updated_at=clock.now()
                    ):
                        raise SettlementInProgress()
                    return _payment_complete(payment.pk, work=_work_of(payment, work), now=now)
                if payment.status == X402Payment.Status.SETTLED:
                    if (now - payment.updated_at).total_seconds() < STALE_SETTLED_SECONDS:
                        raise SettlementInProgress()
                    # The worker died between settlement and its answer: the wallet gets all of it back.
                    return _payment_complete(payment.pk, work=lambda p, q: _failed_work(), now=now)
                # FAILED: nothing moved; settle again (exclusive: only one retry wins the CAS) while
                # the authorization can still settle.
                if now.timestamp() + CLOCK_SKEW_SECONDS > payment.valid_before:
                    raise refuse("authorization_expired", "this authorization has expired unused; pay again")
                if not _move(
                    payment.pk,
                    X402Payment.Status.FAILED,
                    X402Payment.Status.PENDING,
                    now,
                    attempts=payment.attempts + 1,
                ):
                    raise SettlementInProgress()
            if payment.scheme == SCHEME_UPTO:
                return _pay_upto(payment, quote, decoded.raw, work=work)
            with span("x402.settle", payment_id=payment.pk):
                _settle(payment, quote, decoded.raw, now=now)
    return _payment_complete(payment.pk, work=work, now=now)


def _work_of(payment: X402Payment, work: Callable[..., tuple[int, dict[str, Any], int | None]]) -> Any:
    """What a settled payment serves: an upto call's stored answer, or the work (exact: settled before it)."""
    return _stored_work if payment.scheme == SCHEME_UPTO else work


def _pay_upto(
    payment: X402Payment,
    quote: X402Quote,
    raw_payload: dict[str, Any],
    *,
    work: Callable[[X402Payment, X402Quote], tuple[int, dict[str, Any], int | None]],
) -> PaidAnswer:
    """upto: verify with the facilitator, do the work, then settle what it cost (at most the permit).

    The answer is kept on the row before settling, so an unknown settlement is served from it once
    resolved, and a refused one serves nothing (refused + not settled).
    """
    requirements = _requirement_dict(quote, payment.x402_version, SCHEME_UPTO)
    with span("x402.verify_upto", payment_id=payment.pk):
        verdict = facilitator.verify(x402_version=payment.x402_version, payment_payload=raw_payload,
                                     requirements=requirements)  # fmt: skip
    if not verdict.settled:
        _settle_refused(payment, verdict)
    status, body, actual = work(payment, quote)
    if actual is None:  # the work failed: nothing is charged, nothing settles; the payment may be retried
        _move(payment.pk, X402Payment.Status.PENDING, X402Payment.Status.FAILED, clock.now(), error="work failed")
        return PaidAnswer(status, {"error": "The call failed; nothing was charged.", "code": body.get("code")}, {})
    charged = min(max(actual, DUST_MICRO_USDC), payment.amount)
    X402Payment.objects.filter(pk=payment.pk).update(settle_amount=charged, response_status=status,
                                                     response_body=body)  # fmt: skip
    payment.settle_amount = charged
    with span("x402.settle", payment_id=payment.pk):
        _settle(payment, quote, raw_payload, now=clock.now(), requirements={**requirements, "amount": str(charged)})
    return _payment_complete(payment.pk, work=_stored_work, now=clock.now())


def _failed_work() -> tuple[int, dict[str, Any], int | None]:
    return (
        502,
        {"error": "Inference failed after settlement. A credit note has been issued.", "code": "inference_failed"},
        None,
    )


def settlement_unknown_record(payment: X402Payment, quote: X402Quote, outcome: Any, *, now: datetime) -> None:
    """PENDING → SETTLEMENT_PENDING, with the facilitator's tx hash when it named one; audited."""
    with transaction.atomic(durable=True):
        if not _move(
            payment.pk,
            X402Payment.Status.PENDING,
            X402Payment.Status.SETTLEMENT_PENDING,
            now,
            error=outcome.reason[:300],
            tx_hash=outcome.tx_hash,
        ):
            raise InvalidTransition(payment.status, X402Payment.Status.SETTLEMENT_PENDING)
        audit_append(
            event_type="x402_settlement_unknown",
            payload={"payment_id": payment.pk, "reason": outcome.reason, "tx_hash": outcome.tx_hash or None},
            correlation_id=quote.pk,
            now=now,
        )


# --- settlements whose outcome is unknown ---------------------------------------------------

FINALITY_SECONDS = 120  # after validBefore, a transfer not on chain this long after can never land
UNCLAIMED_SECONDS = 3600  # settled by the resolver and never presented again: refunded as a credit note


def _lease(payment_id: str, now: datetime) -> bool:
    """Take the payment for one resolution (a compare-and-set on updated_at; safe on every node)."""
    return bool(
        X402Payment.objects.filter(
            pk=payment_id,
            status=X402Payment.Status.SETTLEMENT_PENDING,
            updated_at__lte=now - timedelta(seconds=settings.X402_RESOLVE_LEASE_SECONDS),
        ).update(updated_at=now, attempts=F("attempts") + 1)
    )


def _resolved(payment: X402Payment, quote: X402Quote, outcome: str, now: datetime, **details: Any) -> str:
    audit_append(
        event_type="x402_settlement_resolved",
        payload={"payment_id": payment.pk, "outcome": outcome, **details},
        correlation_id=quote.pk,
        now=now,
    )
    x402_settlements_resolved_total.labels(outcome=outcome).inc()
    return outcome


def x402_settlement_resolve(payment_id: str, *, now: datetime, serving: bool = False) -> str:
    """Settle the question of one SETTLEMENT_PENDING payment: ``settled``, ``not_settled`` or ``pending``.

    The chain first (was the authorization used, in which transaction, moving what); then, while
    the authorization is still valid and nothing is on chain, the facilitator is asked again (the
    same authorization cannot move funds twice: its nonce). ``not_settled`` only once validBefore
    (+ finality) has passed with the authorization unused. ``serving``: the payer is presenting
    the payment now and will be served; otherwise the next presentation is.
    """
    if not _lease(payment_id, now):
        return "pending"
    payment = X402Payment.objects.select_related("quote").get(pk=payment_id)
    quote = payment.quote
    expired = now.timestamp() >= payment.valid_before + FINALITY_SECONDS
    upto = payment.scheme == SCHEME_UPTO
    age = (now - payment.created_at).total_seconds()
    if upto:  # Permit2: the nonce's bit in the payer's bitmap; the transfer by its value
        used = onchain.permit2_nonce_used(payer=payment.payer, nonce=payment.nonce)
        find_tx = lambda: onchain.transfer_transaction(  # noqa: E731
            asset=payment.asset, payer=payment.payer, pay_to=payment.pay_to, value=_moved(payment), age_seconds=age
        )
    else:
        used = onchain.authorization_used(asset=payment.asset, payer=payment.payer, nonce=payment.nonce)
        find_tx = lambda: onchain.authorization_transaction(  # noqa: E731
            asset=payment.asset, payer=payment.payer, nonce=payment.nonce, age_seconds=age
        )
    if used:
        tx = payment.tx_hash or find_tx()
        moved = tx and onchain.transfer_matches(
            tx_hash=tx, asset=payment.asset, payer=payment.payer, pay_to=payment.pay_to, value=_moved(payment)
        )
        if not moved:  # used, but not (yet) found as this transfer: ask again later
            logger.warning("x402 settlement: authorization used, transfer not found", extra={"payment_id": payment_id})
            return "pending"
        return _settle_resolved(payment, quote, str(tx), now=now, serving=serving, via="chain")
    if used is False and expired:
        with transaction.atomic(durable=True):
            if not _move(payment.pk, X402Payment.Status.SETTLEMENT_PENDING, X402Payment.Status.FAILED, now,
                         error="authorization expired unused (checked on chain)"):  # fmt: skip
                return "pending"
            return _resolved(payment, quote, "not_settled", now)
    if now.timestamp() < payment.valid_before and payment.payload:
        requirements = _requirement_dict(quote, payment.x402_version, payment.scheme)
        if upto:
            requirements["amount"] = str(_moved(payment))
        outcome = facilitator.settle(
            x402_version=payment.x402_version, payment_payload=payment.payload, requirements=requirements
        )
        if outcome.settled:
            return _settle_resolved(payment, quote, outcome.tx_hash, now=now, serving=serving, via="facilitator")
    if expired and used is None:
        logger.error("x402 settlement unknown past validBefore and the chain cannot be asked: finance must resolve it",
                     extra={"payment_id": payment_id})  # fmt: skip
    return "pending"


def _settle_resolved(
    payment: X402Payment, quote: X402Quote, tx_hash: str, *, now: datetime, serving: bool, via: str
) -> str:
    _payment_settled(
        payment, quote, tx_hash=tx_hash, now=now,
        source=X402Payment.Status.SETTLEMENT_PENDING, awaiting_presentation=not serving,
    )  # fmt: skip
    with transaction.atomic(durable=True):
        return _resolved(payment, quote, "settled", now, tx_hash=tx_hash, via=via)


def x402_settlements_resolve(*, now: datetime, limit: int = 100) -> dict[str, int]:
    """The beat job: resolve due unknown settlements; refund (credit note) settled ones never presented again."""
    counts = {"settled": 0, "not_settled": 0, "pending": 0, "unclaimed": 0}
    due = (
        X402Payment.objects.filter(
            status=X402Payment.Status.SETTLEMENT_PENDING,
            updated_at__lte=now - timedelta(seconds=settings.X402_RESOLVE_LEASE_SECONDS),
        )
        .order_by("updated_at")
        .values_list("pk", flat=True)[:limit]
    )
    for payment_id in due:
        counts[x402_settlement_resolve(payment_id, now=now)] += 1
    unclaimed = X402Payment.objects.filter(
        status=X402Payment.Status.SETTLED, awaiting_presentation=True,
        updated_at__lte=now - timedelta(seconds=UNCLAIMED_SECONDS),
    ).values_list("pk", flat=True)[:limit]  # fmt: skip
    for payment_id in unclaimed:
        if X402Payment.objects.filter(pk=payment_id, awaiting_presentation=True).update(awaiting_presentation=False):
            _payment_complete(payment_id, work=lambda p, q: _unclaimed_work(q), now=now)
            counts["unclaimed"] += 1
    x402_settlements_pending.set(X402Payment.objects.filter(status=X402Payment.Status.SETTLEMENT_PENDING).count())
    return counts


def _unclaimed_work(quote: X402Quote) -> tuple[int, dict[str, Any], int | None]:
    if quote.purpose == X402Quote.Purpose.CREDIT_PACK:  # minted when it settled: nothing is owed
        return 200, {"status": "credited", "pack_size": quote.pack_size}, quote.gross_amount
    return (
        410,
        {"error": "The payment settled but was not presented again; a credit note has been issued.",
         "code": "payment_unclaimed"},
        None,
    )  # fmt: skip
