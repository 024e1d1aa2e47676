"""Billing HTTP API: one thin view per endpoint (parse, call a service, render)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing import selectors, services, statements
from billing.errors import AccountNotFound
from billing.finalize import finalize_bulk_replay_enqueue, finalize_health
from billing.models import BillingEntry
from billing.results import Balance, EntryResult, PurchaseResult
from billing.states import ReleaseReason
from finn import clock
from finn.auth import Principal
from finn.errors import Forbidden
from finn.fields import ErrorSerializer, StrictCharField, StrictIntegerField, TokenField
from finn.flags import require_feature
from finn.idempotency import HEADER as IDEMPOTENCY_HEADER
from finn.idempotency import KEY_PATTERN, run_idempotent

MAX_INT64 = services.MAX_AMOUNT


class BalanceOutput(serializers.Serializer):
    account_id = serializers.IntegerField()
    available = serializers.IntegerField(help_text="µUSD that can be reserved (may be negative down to -credit_limit)")
    held = serializers.IntegerField(help_text="µUSD held by open reserves")


class ExchangeRateOutput(serializers.Serializer):
    credit_units_per_usd = serializers.IntegerField()
    usd_usdc_rate = serializers.CharField()
    frozen_at = serializers.DateTimeField()


class UsageOutput(serializers.Serializer):
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()


class EntryOutput(serializers.Serializer):
    id = serializers.CharField()
    account_id = serializers.IntegerField()
    correlation_id = serializers.CharField()
    state = serializers.CharField()
    estimated_cost = serializers.IntegerField()
    actual_cost = serializers.IntegerField(allow_null=True)
    expires_at = serializers.DateTimeField()
    finalize_attempts = serializers.IntegerField()
    release_reason = serializers.CharField()
    void_reason = serializers.CharField()
    exchange_rate = ExchangeRateOutput()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    model = serializers.CharField(allow_null=True, help_text="metered entries: the model the hold was priced for")
    price_version = serializers.IntegerField(
        allow_null=True, help_text="metered entries: the price version reserved at; commit charges at it"
    )
    usage = UsageOutput(allow_null=True, help_text="metered entries, once committed: the tokens charged for")


class EntryResultOutput(serializers.Serializer):
    entry = EntryOutput()
    balance = BalanceOutput()


def _timestamp(value: datetime) -> str:
    """ISO 8601 in UTC with a trailing Z, as DRF's DateTimeField renders it."""
    text = value.astimezone(UTC).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def entry_data(entry: BillingEntry) -> dict[str, Any]:
    """The entry as EntryOutput describes it (built directly: this is the hot path,
    and instantiating nested serializers per response cost more than the SQL)."""
    return {
        "id": entry.id,
        "account_id": entry.account_id,
        "correlation_id": entry.correlation_id,
        "state": str(entry.state),
        "estimated_cost": entry.estimated_cost,
        "actual_cost": entry.actual_cost,
        "expires_at": _timestamp(entry.expires_at),
        "finalize_attempts": entry.finalize_attempts,
        "release_reason": entry.release_reason,
        "void_reason": entry.void_reason,
        "exchange_rate": {
            "credit_units_per_usd": entry.credit_units_per_usd,
            "usd_usdc_rate": str(entry.usd_usdc_rate),
            "frozen_at": _timestamp(entry.rate_frozen_at),
        },
        "created_at": _timestamp(entry.created_at),
        "updated_at": _timestamp(entry.updated_at),
        "model": entry.model or None,
        "price_version": entry.price_version,
        "usage": None
        if entry.usage_input_tokens is None
        else {"input_tokens": entry.usage_input_tokens, "output_tokens": entry.usage_output_tokens},
    }


def _balance_data(balance: Balance) -> dict[str, Any]:
    return {"account_id": balance.account_id, "available": balance.available, "held": balance.held}


def entry_response(result: EntryResult, *, status_code: int = status.HTTP_200_OK) -> Response:
    headers = {"Idempotent-Replayed": "true"} if result.replayed else None
    return Response(
        {"entry": entry_data(result.entry), "balance": _balance_data(result.balance)},
        status=status_code,
        headers=headers,
    )


def principal_of(request: Request) -> Principal:
    user = request.user
    assert isinstance(user, Principal)
    return user


def require_staff(principal: Principal, what: str) -> None:
    if not principal.is_staff:
        raise Forbidden(f"{what} is for finance staff")


def caller_scope(principal: Principal) -> int | None:
    """The account a caller may touch: its own, or any (None) for staff."""
    return None if principal.is_staff else principal.account_id


ENTRY_ID_PARAM = OpenApiParameter(
    "entry_id", str, OpenApiParameter.PATH, pattern=selectors.ENTRY_ID_PATTERN, description="the entry's id (a ULID)"
)
IDEMPOTENCY_KEY_PARAM = OpenApiParameter(
    IDEMPOTENCY_HEADER,
    str,
    OpenApiParameter.HEADER,
    required=False,
    pattern=KEY_PATTERN,
    description="retry-safe key: the same key (and body) answers the first outcome again",
)
ERRORS = {
    400: OpenApiResponse(ErrorSerializer, description="invalid input"),
    401: OpenApiResponse(ErrorSerializer, description="missing or invalid API key"),
    404: OpenApiResponse(ErrorSerializer, description="no such entry for this account"),
}


class EntryDetailApi(APIView):
    @extend_schema(
        operation_id="billing_entry_get",
        parameters=[ENTRY_ID_PARAM],
        summary="Get one billing entry",
        responses={200: EntryResultOutput, **ERRORS},
    )
    def get(self, request: Request, entry_id: str) -> Response:
        principal = principal_of(request)
        entry = selectors.entry_get(entry_id=selectors.parse_entry_id(entry_id), account_id=caller_scope(principal))
        balance = selectors.account_balance(account_id=entry.account_id)
        return entry_response(EntryResult(entry=entry, balance=balance))


class EntryExtendApi(APIView):
    class ExtendInput(serializers.Serializer):
        additional_cost = StrictIntegerField(min_value=1, max_value=MAX_INT64, help_text="µUSD to add to the hold")
        ttl_seconds = StrictIntegerField(
            required=False, min_value=1, help_text="push the expiry to now + this (never earlier, at most the maximum)"
        )

    @extend_schema(
        operation_id="billing_entry_extend",
        parameters=[ENTRY_ID_PARAM, IDEMPOTENCY_KEY_PARAM],
        summary="Grow a held reserve (a stream that runs longer than estimated); commit may then charge up to it",
        request=ExtendInput,
        responses={
            200: EntryResultOutput,
            402: OpenApiResponse(
                ErrorSerializer,
                description="insufficient_funds, daily_cap_exceeded, account_frozen, budget_policy_exceeded",
            ),
            409: OpenApiResponse(ErrorSerializer, description="hold_expired or invalid_transition (no longer held)"),
            422: OpenApiResponse(ErrorSerializer, description="idempotency_mismatch"),
            **ERRORS,
        },
    )
    def post(self, request: Request, entry_id: str) -> Response:
        principal = principal_of(request)
        parsed_id = selectors.parse_entry_id(entry_id)
        serializer = self.ExtendInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data

        def extend(_key: str | None) -> Response:
            result = services.entry_extend(
                entry_id=parsed_id, additional_cost=data["additional_cost"], ttl_seconds=data.get("ttl_seconds"),
                account_id=caller_scope(principal), now=clock.now(),
            )  # fmt: skip
            return entry_response(result)

        return run_idempotent(request, account_id=principal.account_id, scope="billing.extend", handler=extend)


class EntryReleaseApi(APIView):
    class ReleaseInput(serializers.Serializer):
        reason = serializers.ChoiceField(choices=ReleaseReason.choices)

    @extend_schema(
        operation_id="billing_entry_release",
        parameters=[ENTRY_ID_PARAM],
        summary="Release a hold (inference failed or was cancelled)",
        request=ReleaseInput,
        responses={
            200: EntryResultOutput,
            409: OpenApiResponse(ErrorSerializer, description="invalid_transition"),
            **ERRORS,
        },
    )
    def post(self, request: Request, entry_id: str) -> Response:
        principal = principal_of(request)
        parsed_id = selectors.parse_entry_id(entry_id)
        serializer = self.ReleaseInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        result = services.entry_release(
            entry_id=parsed_id,
            reason=serializer.validated_data["reason"],
            account_id=caller_scope(principal),
            now=clock.now(),
        )
        return entry_response(result)


class AccountBalanceOutput(serializers.Serializer):
    balance = BalanceOutput()
    at = serializers.DateTimeField(required=False, help_text="with ?at=: the moment the balance is for")


class MyBalanceApi(APIView):
    @extend_schema(
        operation_id="account_balance_me",
        summary="The caller's balances",
        responses={200: AccountBalanceOutput, **ERRORS},
    )
    def get(self, request: Request) -> Response:
        balance = selectors.account_balance(account_id=principal_of(request).account_id)
        return Response({"balance": _balance_data(balance)})


class AccountBalanceApi(APIView):
    @extend_schema(
        operation_id="account_balance_get",
        summary="An account's balances (own account, or any for staff); ?at= a past moment, from postings",
        parameters=[OpenApiParameter("at", str, description="ISO 8601 with offset: the balance at that moment")],
        responses={200: AccountBalanceOutput, **ERRORS},
    )
    def get(self, request: Request, account_id: int) -> Response:
        scope = caller_scope(principal_of(request))
        if scope is not None and scope != account_id:
            raise AccountNotFound(f"account {account_id} not found")
        if "at" in request.query_params:  # a past moment: computed from the postings
            at = statements.parse_instant(request.query_params["at"], "at")
            past = statements.balance_at(account_id=account_id, at=at)
            data = {"account_id": account_id, "available": past.available, "held": past.held}
            return Response({"balance": data, "at": at.isoformat()})
        balance = selectors.account_balance(account_id=account_id)
        return Response({"balance": _balance_data(balance)})


class EntryFinalizeApi(APIView):
    class FinalizeInput(serializers.Serializer):
        reason = StrictCharField(max_length=1000)

    @extend_schema(
        operation_id="billing_entry_finalize",
        parameters=[ENTRY_ID_PARAM],
        summary="Finalize a poison (FINALIZE_FAILED) entry by hand (finance staff)",
        request=FinalizeInput,
        responses={
            200: EntryResultOutput,
            403: OpenApiResponse(ErrorSerializer, description="not staff"),
            409: OpenApiResponse(ErrorSerializer, description="invalid_transition"),
            **ERRORS,
        },
    )
    def post(self, request: Request, entry_id: str) -> Response:
        principal = principal_of(request)
        require_staff(principal, "finalizing an entry by hand")
        parsed_id = selectors.parse_entry_id(entry_id)
        serializer = self.FinalizeInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        result = services.entry_finalize_ack(
            entry_id=parsed_id,
            response_status=0,
            now=clock.now(),
            actor=principal.actor,
            reason=serializer.validated_data["reason"],
            manual=True,
        )
        return entry_response(result)


class FinalizeReplayApi(APIView):
    class ReplayInput(serializers.Serializer):
        concurrency = StrictIntegerField(required=False, min_value=1, max_value=20)
        limit = StrictIntegerField(required=False, min_value=1, max_value=1000)

    class ReplayOutput(serializers.Serializer):
        queued = serializers.IntegerField(help_text="poison entries the replay will try")
        concurrency = serializers.IntegerField()

    @extend_schema(
        operation_id="billing_finalize_replay",
        summary="Replay poison entries upstream in the background (finance staff)",
        request=ReplayInput,
        responses={202: ReplayOutput, 403: OpenApiResponse(ErrorSerializer, description="not staff"), **ERRORS},
    )
    def post(self, request: Request) -> Response:
        require_staff(principal_of(request), "replaying poison entries")
        serializer = self.ReplayInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        concurrency = serializer.validated_data.get("concurrency", settings.FINALIZE_REPLAY_CONCURRENCY)
        limit = serializer.validated_data.get("limit", 100)
        queued = min(limit, selectors.poison_count())
        finalize_bulk_replay_enqueue(concurrency=concurrency, limit=limit)
        return Response({"queued": queued, "concurrency": concurrency}, status=status.HTTP_202_ACCEPTED)


class FinalizeHealthApi(APIView):
    class HealthOutput(serializers.Serializer):
        breaker_state = serializers.CharField()
        pending = serializers.IntegerField()
        failed = serializers.IntegerField()
        healthy = serializers.BooleanField()

    @extend_schema(
        operation_id="billing_finalize_health",
        summary="Finalize pipeline health: breaker state and backlog (503 when unhealthy)",
        responses={
            200: HealthOutput,
            403: OpenApiResponse(ErrorSerializer, description="not staff"),
            503: HealthOutput,
            **ERRORS,
        },
    )
    def get(self, request: Request) -> Response:
        require_staff(principal_of(request), "finalize health")
        health = finalize_health()
        body = {
            "breaker_state": health.breaker_state,
            "pending": health.pending,
            "failed": health.failed,
            "healthy": health.healthy,
        }
        return Response(body, status=200 if health.healthy else 503)


class MemberPurchaseOutput(serializers.Serializer):
    kind = serializers.CharField(help_text="boost or badge")
    payment_id = serializers.CharField(help_text="credit:<journal entry id>")
    amount = serializers.IntegerField(help_text="µUSD charged from available credit")
    expires_at = serializers.DateTimeField(allow_null=True, help_text="boosts: when this bundle ends")
    balance = BalanceOutput()


_PURCHASE_ERRORS = {
    201: MemberPurchaseOutput,
    402: OpenApiResponse(ErrorSerializer, description="insufficient_funds or daily_cap_exceeded"),
    409: OpenApiResponse(ErrorSerializer, description="purchase_in_progress, already_purchased, request_in_progress"),
    422: OpenApiResponse(ErrorSerializer, description="idempotency_mismatch"),
    503: OpenApiResponse(ErrorSerializer, description="dependency_unavailable (Redis down; Retry-After: 30)"),
    **ERRORS,
    404: OpenApiResponse(ErrorSerializer, description="feature_disabled (the billing flag is off)"),
}


def _purchase_response(result: PurchaseResult) -> Response:
    body = {
        "kind": result.kind,
        "payment_id": result.payment_id,
        "amount": result.amount,
        "expires_at": _timestamp(result.expires_at) if result.expires_at else None,
        "balance": _balance_data(result.balance),
    }
    headers = {"Idempotent-Replayed": "true"} if result.replayed else None
    return Response(body, status=status.HTTP_201_CREATED, headers=headers)


class BoostPurchaseApi(APIView):
    class BoostInput(serializers.Serializer):
        member_id = TokenField()
        community_id = TokenField()
        months = StrictIntegerField(
            schema_enum=sorted(services.BOOST_BUNDLE_CENTS),
            help_text="bundle: 1, 3, 6 or 12 months (499, 1347, 2394, 4190 cents)",
        )

    @extend_schema(
        operation_id="billing_boost_purchase",
        summary="Buy a community boost from prepaid credit (stacks after the member's active boost)",
        request=BoostInput,
        parameters=[IDEMPOTENCY_KEY_PARAM],
        responses=_PURCHASE_ERRORS,
    )
    def post(self, request: Request) -> Response:
        require_feature("billing", "member purchases are currently disabled")
        principal = principal_of(request)
        serializer = self.BoostInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data

        def buy(key: str | None) -> Response:
            return _purchase_response(
                services.boost_purchase_with_credit(
                    account_id=principal.account_id,
                    member_id=data["member_id"],
                    community_id=data["community_id"],
                    months=data["months"],
                    idempotency_key=key,
                    now=clock.now(),
                )
            )

        return run_idempotent(request, account_id=principal.account_id, scope="billing.boost", handler=buy)


class BadgePurchaseApi(APIView):
    class BadgeInput(serializers.Serializer):
        member_id = TokenField()

    @extend_schema(
        operation_id="billing_badge_purchase",
        summary="Buy a member's badge from prepaid credit (one per member)",
        request=BadgeInput,
        parameters=[IDEMPOTENCY_KEY_PARAM],
        responses=_PURCHASE_ERRORS,
    )
    def post(self, request: Request) -> Response:
        require_feature("billing", "member purchases are currently disabled")
        principal = principal_of(request)
        serializer = self.BadgeInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data

        def buy(key: str | None) -> Response:
            return _purchase_response(
                services.badge_purchase_with_credit(
                    account_id=principal.account_id,
                    member_id=data["member_id"],
                    idempotency_key=key,
                    now=clock.now(),
                )
            )

        return run_idempotent(request, account_id=principal.account_id, scope="billing.badge", handler=buy)
