"""Reserve and commit over HTTP: by a raw µUSD estimate, or metered by model and tokens.

Here rather than in billing's API because a metered reserve needs the prices (credits) and
billing imports no other app; both forms end in billing's services.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing import selectors, services
from billing.api import (
    ENTRY_ID_PARAM,
    ERRORS,
    IDEMPOTENCY_KEY_PARAM,
    MAX_INT64,
    EntryResultOutput,
    caller_scope,
    entry_response,
    principal_of,
    require_staff,
)
from billing.errors import AccountNotFound
from billing.results import EntryResult, Usage
from credits.metering import MAX_TOKENS, metered_commit, metered_reserve
from credits.pricing import model_names
from credits.receipts import entry_receipt
from credits.tokens import keyring
from finn import clock
from finn.errors import InvalidRequest
from finn.fields import ErrorSerializer, StrictCharField, StrictIntegerField, TokenField
from finn.idempotency import run_idempotent
from finn.logging import current_correlation_id


class ReceiptedResultOutput(EntryResultOutput):
    receipt = serializers.CharField(help_text="compact JWS (ES256, kid in /.well-known/jwks.json): see Signed receipts")


class SignedReceiptOutput(serializers.Serializer):
    receipt = serializers.CharField(help_text="compact JWS (ES256)")
    kid = serializers.CharField(help_text="the signing key's id in /.well-known/jwks.json")


def _with_receipt(response: Response, result: EntryResult) -> Response:
    response.data["receipt"] = entry_receipt(result.entry, commit_sequence=result.audit_sequence)
    return response


def _one_of(data: dict[str, Any], raw: str, metered: tuple[str, ...]) -> None:
    has_raw = raw in data
    has_metered = [name for name in metered if name in data]
    if has_raw and has_metered:
        raise serializers.ValidationError(f"give either {raw} or {' + '.join(metered)}, not both")
    if not has_raw and len(has_metered) != len(metered):
        raise serializers.ValidationError(f"give {raw}, or all of {', '.join(metered)}")


_METERED = ("model", "input_tokens", "max_output_tokens")


class EntryReserveApi(APIView):
    class ReserveInput(serializers.Serializer):
        estimated_cost = StrictIntegerField(
            required=False, min_value=1, max_value=MAX_INT64, help_text="µUSD to hold (or model + tokens instead)"
        )
        model = StrictCharField(
            required=False, max_length=100, schema_enum=model_names, help_text="metered: the model to price at"
        )
        input_tokens = StrictIntegerField(required=False, min_value=0, max_value=MAX_TOKENS)
        max_output_tokens = StrictIntegerField(
            required=False, min_value=1, max_value=MAX_TOKENS, help_text="metered: the most the call may generate"
        )
        correlation_id = TokenField(required=False)
        ttl_seconds = StrictIntegerField(required=False, min_value=1, help_text="hold lifetime, default 300 s")
        account_id = StrictIntegerField(required=False, min_value=1, help_text="staff only: reserve for this account")

        def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
            _one_of(attrs, "estimated_cost", _METERED)
            return attrs

    @extend_schema(
        operation_id="billing_entry_reserve",
        summary="Reserve before an inference call: a µUSD estimate, or model + tokens at the price in effect",
        description=(
            "With `model`, `input_tokens` and `max_output_tokens` the hold is computed at the model's price"
            " now (each side rounded up) and the entry records that price version: its commit by `usage`"
            " charges at it, even if prices change meanwhile."
        ),
        request=ReserveInput,
        parameters=[IDEMPOTENCY_KEY_PARAM],
        responses={
            201: EntryResultOutput,
            402: OpenApiResponse(
                ErrorSerializer,
                description="insufficient_funds, finalize_backlog, daily_cap_exceeded, budget_policy_exceeded",
            ),
            409: OpenApiResponse(ErrorSerializer, description="request_in_progress"),
            422: OpenApiResponse(ErrorSerializer, description="idempotency_mismatch"),
            **ERRORS,
        },
    )
    def post(self, request: Request) -> Response:
        principal = principal_of(request)
        serializer = self.ReserveInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        account_id = data.get("account_id", principal.account_id)
        if account_id != principal.account_id and not principal.is_staff:
            raise InvalidRequest(f"unknown account {account_id}", reason="unknown_account")

        def reserve(key: str | None) -> Response:
            common = {
                "account_id": account_id,
                "correlation_id": data.get("correlation_id") or current_correlation_id(),
                "ttl_seconds": data.get("ttl_seconds"),
                "idempotency_key": key,
                "now": clock.now(),
            }
            try:
                if "estimated_cost" in data:
                    result = services.entry_reserve(estimated_cost=data["estimated_cost"], **common)
                else:
                    result = metered_reserve(
                        model=data["model"],
                        input_tokens=data["input_tokens"],
                        max_output_tokens=data["max_output_tokens"],
                        **common,
                    )
            except AccountNotFound:
                raise InvalidRequest(f"unknown account {account_id}", reason="unknown_account") from None
            return entry_response(result, status_code=status.HTTP_201_CREATED)

        return run_idempotent(request, account_id=principal.account_id, scope="billing.reserve", handler=reserve)


class UsageInput(serializers.Serializer):
    input_tokens = StrictIntegerField(min_value=0, max_value=MAX_TOKENS)
    output_tokens = StrictIntegerField(min_value=0, max_value=MAX_TOKENS)


class EntryCommitApi(APIView):
    class CommitInput(serializers.Serializer):
        actual_cost = StrictIntegerField(
            required=False, min_value=0, max_value=MAX_INT64, help_text="µUSD actually spent (or usage instead)"
        )
        usage = UsageInput(required=False, help_text="metered entries: the tokens used, priced at the reserved version")

        def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
            _one_of(attrs, "actual_cost", ("usage",))
            return attrs

    @extend_schema(
        operation_id="billing_entry_commit",
        parameters=[ENTRY_ID_PARAM],
        summary="Commit the actual cost, or the usage at the reserved price (the rest of the hold is returned)",
        request=CommitInput,
        responses={
            200: ReceiptedResultOutput,
            402: OpenApiResponse(ErrorSerializer, description="insufficient_funds (overcapture)"),
            409: OpenApiResponse(
                ErrorSerializer, description="invalid_transition, exceeds_hold, hold_expired or not_metered"
            ),
            **ERRORS,
        },
    )
    def post(self, request: Request, entry_id: str) -> Response:
        principal = principal_of(request)
        parsed_id = selectors.parse_entry_id(entry_id)
        serializer = self.CommitInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        scope = caller_scope(principal)
        if "usage" in data:
            usage = Usage(data["usage"]["input_tokens"], data["usage"]["output_tokens"])
            result = metered_commit(entry_id=parsed_id, usage=usage, account_id=scope, now=clock.now())
        else:
            result = services.entry_commit(
                entry_id=parsed_id, actual_cost=data["actual_cost"], account_id=scope, now=clock.now()
            )
        return _with_receipt(entry_response(result), result)


class EntryVoidApi(APIView):
    class VoidInput(serializers.Serializer):
        reason = StrictCharField(max_length=1000)

    @extend_schema(
        operation_id="billing_entry_void",
        parameters=[ENTRY_ID_PARAM],
        summary="Void a charged entry and refund it (finance staff); answers a signed receipt of the void",
        request=VoidInput,
        responses={
            200: ReceiptedResultOutput,
            403: OpenApiResponse(ErrorSerializer, description="not staff"),
            409: OpenApiResponse(ErrorSerializer, description="invalid_transition"),
            **ERRORS,
        },
    )
    def post(self, request: Request, entry_id: str) -> Response:
        principal = principal_of(request)
        require_staff(principal, "voiding an entry")
        parsed_id = selectors.parse_entry_id(entry_id)
        serializer = self.VoidInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        result = services.entry_void(
            entry_id=parsed_id,
            reason=serializer.validated_data["reason"],
            actor=principal.actor,
            now=clock.now(),
        )
        return _with_receipt(entry_response(result), result)


class EntryReceiptApi(APIView):
    @extend_schema(
        operation_id="billing_entry_receipt",
        parameters=[ENTRY_ID_PARAM],
        summary="A signed receipt of what an entry was charged (or refunded by a void)",
        responses={
            200: SignedReceiptOutput,
            409: OpenApiResponse(ErrorSerializer, description="not_charged (held or released: no charge)"),
            **ERRORS,
        },
    )
    def get(self, request: Request, entry_id: str) -> Response:
        principal = principal_of(request)
        entry = selectors.entry_get(entry_id=selectors.parse_entry_id(entry_id), account_id=caller_scope(principal))
        return Response({"receipt": entry_receipt(entry), "kid": keyring().signing_kid})
