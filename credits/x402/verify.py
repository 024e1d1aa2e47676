"""x402 step 2, verification against the quote: the echoed requirement, amounts, times, nonce.

The payload itself is decoded and its EIP-712 signature checked in ``credits.x402.protocol``;
the checks run in the order of the refusal codes.
"""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from x402.mechanisms.evm.constants import SCHEME_UPTO, X402_UPTO_PERMIT2_PROXY_ADDRESS

from billing.metrics import rejected
from credits.errors import refuse
from credits.models import X402Payment, X402Quote
from credits.services import nonce_key
from credits.x402.protocol import (
    CLOCK_SKEW_SECONDS,
    DUST_MICRO_USDC,
    NETWORKS,
    DecodedPayment,
    current_network,
    signature_valid,
    verification_slot,
)
from credits.x402.quotes import _requirement_dict, offer_of
from finn.degradation import redis_guard
from finn.redis import get_redis


def _match_quote(decoded: DecodedPayment, *, purpose: str, request_sha256: str, now: datetime) -> X402Quote:
    """The outstanding quote this payment answers, matched exactly; else 402 quote_not_found."""
    auth = decoded.authorization
    quote: X402Quote | None = None
    if decoded.version == 2:
        extra = (decoded.accepted or {}).get("extra")
        quote_id = extra.get("quoteId") if isinstance(extra, dict) else None
        if isinstance(quote_id, str):
            quote = X402Quote.objects.filter(pk=quote_id).first()
        scheme = decoded.authorization.scheme
        if quote is not None and (
            decoded.accepted != _requirement_dict(quote, 2, scheme)
            or (scheme == SCHEME_UPTO and not offer_of(quote).upto)
        ):
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
    if auth.scheme == SCHEME_UPTO:  # Permit2: the token it permits, the proxy that pulls it, the facilitator
        if auth.token != quote.asset.lower():
            raise refuse("invalid_token", f"only USDC ({network.usdc}) is accepted")
        if auth.spender != X402_UPTO_PERMIT2_PROXY_ADDRESS.lower() or auth.facilitator != (
            settings.X402_UPTO_FACILITATOR_ADDRESS or None
        ):
            raise refuse("invalid_recipient", "the Permit2 spender or facilitator is not the one offered")
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
