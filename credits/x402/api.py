"""x402 endpoints: a paid inference call and a credit pack bought with x402 (thin views)."""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal
from typing import Any

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.selectors import account_balance
from billing.units import Rounding, micro_usd_to_micro_usdc
from credits import inference
from credits.errors import InvalidPackSize
from credits.models import X402Payment, X402Quote
from credits.pricing import actual_cost_at, estimate_cost_at, model_names
from credits.purchases import PACKS
from credits.x402.payments import PaidAnswer, x402_pay
from credits.x402.protocol import (
    PAYER_HEADER,
    PAYMENT_REQUIRED,
    PAYMENT_SIGNATURE,
    VERSION_HEADER,
    X_PAYMENT,
    decode_payment,
    encode_header,
    payment_required_v1,
    payment_required_v2,
)
from credits.x402.quotes import offer_of, request_fingerprint, x402_quote_create
from finn import clock
from finn.auth import Principal
from finn.errors import InvalidRequest
from finn.fields import ErrorSerializer, StrictCharField, StrictIntegerField
from finn.flags import require_feature
from finn.ratelimit import client_ip, limit_or_raise
from finn.validators import is_eth_address

DEFAULT_MAX_TOKENS = 256

_PAYMENT_HEADERS = [
    OpenApiParameter(PAYMENT_SIGNATURE, str, OpenApiParameter.HEADER, required=False, description="x402 v2 payment"),
    OpenApiParameter(X_PAYMENT, str, OpenApiParameter.HEADER, required=False, description="x402 v1 payment"),
    OpenApiParameter(VERSION_HEADER, str, OpenApiParameter.HEADER, required=False, description="1: the v1 402 form"),
    OpenApiParameter(PAYER_HEADER, str, OpenApiParameter.HEADER, required=False, description="apply credit notes"),
]
_RESPONSES = {
    400: OpenApiResponse(ErrorSerializer, description="invalid_request, invalid_payment, unknown_model"),
    402: OpenApiResponse(
        ErrorSerializer, description="payment_required (with the quote) or a refusal code (quote_not_found, ...)"
    ),
    404: OpenApiResponse(ErrorSerializer, description="feature_disabled (x402 is turned off)"),
    409: OpenApiResponse(
        ErrorSerializer, description="settlement_in_progress, settlement_pending (present the same payment again)"
    ),
    429: OpenApiResponse(ErrorSerializer, description="rate_limited"),
    503: OpenApiResponse(ErrorSerializer, description="settlement_unavailable, verification_queue_full"),
}


class ReceiptOutput(serializers.Serializer):
    quoted = serializers.IntegerField(help_text="µUSDC quoted (before credit notes)")
    actual = serializers.IntegerField(help_text="µUSDC the call cost")
    credit_note = serializers.DictField(allow_null=True, help_text="{id, amount} for quoted - actual")
    credit_balance = serializers.IntegerField(help_text="the wallet's credit-note balance, µUSDC")


class InvokeOutput(serializers.Serializer):
    result = serializers.CharField()
    model = serializers.CharField()
    usage = serializers.DictField(child=serializers.IntegerField())
    receipt = ReceiptOutput()
    payment_id = serializers.CharField()
    quote_id = serializers.CharField()
    signed_receipt = serializers.CharField(help_text="compact JWS (ES256, kid in /.well-known/jwks.json)")


class PackOutput(serializers.Serializer):
    status = serializers.CharField()
    pack_size = serializers.IntegerField()
    paid_micro_usdc = serializers.IntegerField()
    balance = serializers.DictField(child=serializers.IntegerField())
    payment_id = serializers.CharField()
    quote_id = serializers.CharField()
    signed_receipt = serializers.CharField(help_text="compact JWS (ES256, kid in /.well-known/jwks.json)")


def _payment_required(request: Request, quote: X402Quote) -> Response:
    """The 402: v2 header + the same document in the body, or the v1 body form on request."""
    offer = offer_of(quote)
    if request.headers.get(VERSION_HEADER, "").strip() == "1":
        document = payment_required_v1(offer)
        headers = {"Cache-Control": "no-store"}
    else:
        document = payment_required_v2(offer)
        headers = {PAYMENT_REQUIRED: encode_header(document), "Cache-Control": "no-store"}
    return Response({**document, "code": "payment_required"}, status=402, headers=headers)


def _paid(answer: PaidAnswer) -> Response:
    headers = dict(answer.headers)
    if answer.replayed:
        headers["Idempotent-Replayed"] = "true"
    return Response(answer.body, status=answer.status, headers=headers)


def _x402(
    request: Request,
    *,
    purpose: str,
    fingerprint_data: dict[str, Any],
    gross_amount: int,
    quote_fields: dict[str, Any],
    work: Any,
) -> Response:
    fingerprint = request_fingerprint(fingerprint_data)
    v2 = request.headers.get(PAYMENT_SIGNATURE)
    v1 = request.headers.get(X_PAYMENT)
    now = clock.now()
    if not v2 and not v1:
        limit_or_raise(tier="x402_quote", identity=client_ip(request))
        payer = request.headers.get(PAYER_HEADER, "").strip()
        if payer and not is_eth_address(payer):
            raise InvalidRequest(f"{PAYER_HEADER} must be a 0x-prefixed 20-byte address", reason="invalid_payer")
        quote = x402_quote_create(
            purpose=purpose,
            gross_amount=gross_amount,
            resource_url=request.build_absolute_uri(request.path),
            request_sha256=fingerprint,
            payer=payer.lower(),
            now=now,
            **quote_fields,
        )
        return _payment_required(request, quote)
    decoded = decode_payment(v2 or v1 or "", version_hint=2 if v2 else 1)
    limit_or_raise(tier="x402", identity=decoded.authorization.payer)
    return _paid(x402_pay(decoded, purpose=purpose, request_sha256=fingerprint, work=work, now=now))


class X402InvokeApi(APIView):
    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = []

    class InvokeInput(serializers.Serializer):
        model = StrictCharField(max_length=64, schema_enum=model_names)
        prompt = StrictCharField(max_length=100_000, trim_whitespace=False)
        max_tokens = StrictIntegerField(required=False, min_value=1, max_value=1_000_000)

    @extend_schema(
        operation_id="x402_invoke",
        summary="One inference paid with x402 (USDC, EIP-3009); no payment header → 402 with the quote",
        request=InvokeInput,
        parameters=_PAYMENT_HEADERS,
        responses={200: InvokeOutput, 502: OpenApiResponse(ErrorSerializer), **_RESPONSES},
    )
    def post(self, request: Request) -> Response:
        require_feature("x402", "x402 payments are currently disabled")
        serializer = self.InvokeInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        if not data["prompt"].strip():
            raise InvalidRequest("prompt must not be blank", reason="blank_prompt")
        max_tokens = data.get("max_tokens", DEFAULT_MAX_TOKENS)
        if max_tokens > settings.X402_MAX_TOKENS_LIMIT:
            raise InvalidRequest(f"max_tokens is at most {settings.X402_MAX_TOKENS_LIMIT}", reason="too_large")
        price = inference.price_for(data["model"])  # unknown model → 400 before any payment work
        estimate = estimate_cost_at(
            price, input_tokens=inference.input_tokens_bound(data["prompt"]), max_output_tokens=max_tokens
        )
        gross = micro_usd_to_micro_usdc(_markup(estimate), rounding=Rounding.CEIL)
        if gross > settings.X402_MAX_QUOTE_MICRO_USDC:  # standard clients refuse more than $1 by default
            raise InvalidRequest(
                f"this call could cost {gross} µUSDC, above the {settings.X402_MAX_QUOTE_MICRO_USDC} a pay-per-request"
                " quote may ask; shorten the prompt or lower max_tokens",
                reason="quote_too_large",
                quote_limit=settings.X402_MAX_QUOTE_MICRO_USDC,
            )

        def work(payment: X402Payment, quote: X402Quote) -> tuple[int, dict[str, Any], int | None]:
            try:
                result = inference.run(model=data["model"], prompt=data["prompt"], max_tokens=max_tokens)
            except inference.InferenceFailed:
                return (
                    502,
                    {
                        "error": "Inference failed after settlement. A credit note has been issued.",
                        "code": "inference_failed",
                    },
                    None,
                )
            actual = actual_cost_at(price, input_tokens=result.input_tokens, output_tokens=result.output_tokens)
            charged = micro_usd_to_micro_usdc(_markup(actual), rounding=Rounding.CEIL)
            body = {
                "result": result.output,
                "model": data["model"],
                "usage": {"input_tokens": result.input_tokens, "output_tokens": result.output_tokens},
            }
            return 200, body, charged

        return _x402(
            request,
            purpose=X402Quote.Purpose.INVOKE,
            fingerprint_data={"model": data["model"], "prompt": data["prompt"], "max_tokens": max_tokens},
            gross_amount=gross,
            quote_fields={"model": data["model"], "max_tokens": max_tokens},
            work=work,
        )


def _markup(micro_usd: int) -> int:
    """ceil(cost x markup) in µUSD (the markup is a decimal ≥ 1)."""
    return int((Decimal(micro_usd) * settings.X402_MARKUP).to_integral_value(rounding=ROUND_CEILING))


class X402CreditPackApi(APIView):
    throttle_classes = []

    class PackInput(serializers.Serializer):
        pack_size = StrictIntegerField(schema_enum=sorted(PACKS), help_text="credit units: 500, 1000 or 2500")

    @extend_schema(
        operation_id="credits_x402_purchase",
        summary="Buy a credit pack with x402 for the signed-in account",
        request=PackInput,
        parameters=_PAYMENT_HEADERS,
        responses={200: PackOutput, 401: OpenApiResponse(ErrorSerializer), **_RESPONSES},
    )
    def post(self, request: Request) -> Response:
        require_feature("x402", "x402 payments are currently disabled")
        principal = request.user
        assert isinstance(principal, Principal)
        serializer = self.PackInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        pack_size = serializer.validated_data["pack_size"]
        if pack_size not in PACKS:
            raise InvalidPackSize(f"pack_size must be one of {sorted(PACKS)}")
        account_id = principal.account_id

        def work(payment: X402Payment, quote: X402Quote) -> tuple[int, dict[str, Any], int | None]:
            balance = account_balance(account_id=account_id)
            return (
                200,
                {
                    "status": "minted",
                    "pack_size": pack_size,
                    "paid_micro_usdc": payment.amount,
                    "balance": {"account_id": account_id, "available": balance.available, "held": balance.held},
                },
                payment.amount,
            )

        return _x402(
            request,
            purpose=X402Quote.Purpose.CREDIT_PACK,
            fingerprint_data={"account_id": account_id, "pack_size": pack_size},
            gross_amount=PACKS[pack_size],
            quote_fields={"account_id": account_id, "pack_size": pack_size},
            work=work,
        )
