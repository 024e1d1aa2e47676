"""x402 step 1, the quote: the offer behind a 402 (row + audit; Redis copy on commit)."""

from __future__ import annotations

import contextlib
import hashlib
import json
from datetime import datetime, timedelta
from typing import Any

import redis
from django.conf import settings
from django.db import transaction
from ulid import ULID

from credits.models import X402Quote
from credits.selectors import wallet_credit_balance
from credits.x402.credit_notes import apply_credit_notes
from credits.x402.protocol import (
    DUST_MICRO_USDC,
    Offer,
    current_network,
    payment_required_v1,
    requirement_v2,
)
from finn.audit import audit_append
from finn.redis import get_redis


def request_fingerprint(data: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


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
        # Variable cost: an inference call may also be paid with upto (settled for what it cost).
        upto=quote.purpose == X402Quote.Purpose.INVOKE and not quote.credit_applied,
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


def _requirement_dict(quote: X402Quote, version: int, scheme: str = "exact") -> dict[str, Any]:
    if version == 2:
        requirement = requirement_v2(offer_of(quote), scheme)
        return dict(requirement.model_dump(mode="json", by_alias=True, exclude_none=True))
    return dict(payment_required_v1(offer_of(quote))["accepts"][0])
