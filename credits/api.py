"""Credits HTTP API: model prices and cost estimates."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.api import principal_of
from billing.errors import AccountNotFound
from billing.selectors import agent_budget
from billing.services import spend_policy_get, spend_policy_set
from billing.units import Rounding, micro_usd_to_cu
from credits.accuracy import model_accuracy
from credits.metering import MAX_TOKENS
from credits.models import AgentWallet, WalletIdentity
from credits.pricing import estimate_cost_at, model_names, model_price, model_prices
from credits.pricing_config import PER_MILLION
from credits.purchases import PACKS, purchase_credit_pack
from credits.signin import (
    NONCE_TTL_SECONDS,
    Session,
    session_logout,
    session_refresh,
    signin_nonce_issue,
    signin_verify,
)
from credits.siwe_message import MAX_MESSAGE_CHARS
from credits.tokens import keyring
from finn import clock
from finn.auth import Principal
from finn.errors import Forbidden, InvalidRequest
from finn.fields import ErrorSerializer, StrictCharField, StrictIntegerField
from finn.flags import require_feature
from finn.ratelimit import ChallengeThrottle


def _per_token(per_million: int) -> str:
    """µUSD per token as an exact decimal string (3000000 -> "3", 400000 -> "0.4")."""
    whole, fraction = divmod(per_million, PER_MILLION)
    return str(whole) if not fraction else f"{whole}.{fraction:06d}".rstrip("0")


class ModelListApi(APIView):
    authentication_classes = []
    permission_classes = [AllowAny]

    class ModelOutput(serializers.Serializer):
        model = serializers.CharField()
        input_micro_usd_per_token = serializers.CharField()
        output_micro_usd_per_token = serializers.CharField()
        input_micro_usd_per_million_tokens = serializers.IntegerField()
        output_micro_usd_per_million_tokens = serializers.IntegerField()
        price_version = serializers.IntegerField(help_text="a metered reserve records it; commit charges at it")
        effective_from = serializers.DateTimeField()

    class ModelListOutput(serializers.Serializer):
        models = serializers.ListField(child=serializers.DictField())

    @extend_schema(operation_id="models_list", summary="Models and their prices", responses={200: ModelListOutput})
    def get(self, request: Request) -> Response:
        return Response(
            {
                "models": [
                    {
                        "model": price.model,
                        "input_micro_usd_per_token": _per_token(price.input_per_million),
                        "output_micro_usd_per_token": _per_token(price.output_per_million),
                        "input_micro_usd_per_million_tokens": price.input_per_million,
                        "output_micro_usd_per_million_tokens": price.output_per_million,
                        "price_version": price.version,
                        "effective_from": price.effective_from,
                    }
                    for price in model_prices()
                ]
            }
        )


class EstimateApi(APIView):
    class EstimateInput(serializers.Serializer):
        model = StrictCharField(max_length=100, schema_enum=model_names)
        input_tokens = StrictIntegerField(min_value=0, max_value=MAX_TOKENS)
        max_output_tokens = StrictIntegerField(min_value=0, max_value=MAX_TOKENS)

    class EstimateOutput(serializers.Serializer):
        model = serializers.CharField()
        estimated_cost = serializers.IntegerField(help_text="µUSD to reserve (rounded up)")
        estimated_cost_cu = serializers.IntegerField(help_text="the same in credit units (rounded up)")
        price_version = serializers.IntegerField(help_text="the price version the estimate is at")

    @extend_schema(
        operation_id="pricing_estimate",
        summary="What to reserve for a request (µUSD, rounded up)",
        request=EstimateInput,
        responses={200: EstimateOutput, 400: OpenApiResponse(ErrorSerializer, description="unknown_model")},
    )
    def post(self, request: Request) -> Response:
        serializer = self.EstimateInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        price = model_price(data["model"])
        cost = estimate_cost_at(price, input_tokens=data["input_tokens"], max_output_tokens=data["max_output_tokens"])
        return Response(
            {
                "model": data["model"],
                "estimated_cost": cost,
                "estimated_cost_cu": micro_usd_to_cu(cost, rounding=Rounding.CEIL),
                "price_version": price.version,
            }
        )


class AgentBudgetApi(APIView):
    class BudgetOutput(serializers.Serializer):
        account_id = serializers.IntegerField()
        day = serializers.DateField()
        daily_cap = serializers.IntegerField(allow_null=True)
        spent_today = serializers.IntegerField()
        held_today = serializers.IntegerField()
        remaining = serializers.IntegerField(allow_null=True)
        available = serializers.IntegerField()
        refill_threshold = serializers.IntegerField(allow_null=True)
        needs_refill = serializers.BooleanField()

    @extend_schema(
        operation_id="agent_budget",
        summary="An agent wallet's daily cap, spend and holds today (UTC)",
        responses={200: BudgetOutput, 404: OpenApiResponse(ErrorSerializer, description="agent_not_found")},
    )
    def get(self, request: Request, account_id: int) -> Response:
        principal = request.user
        assert isinstance(principal, Principal)
        budget = agent_budget(
            account_id=account_id,
            now=clock.now(),
            scope_account_id=None if principal.is_staff else principal.account_id,
        )
        return Response(self.BudgetOutput(asdict(budget)).data)


class _AuthView(APIView):
    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = [ChallengeThrottle]


class SessionOutput(serializers.Serializer):
    access_token = serializers.CharField()
    refresh_token = serializers.CharField()
    token_type = serializers.CharField()
    expires_in = serializers.IntegerField()
    account_id = serializers.IntegerField()
    address = serializers.CharField()


def _session_response(session: Session) -> Response:
    return Response(
        {
            "access_token": session.access_token,
            "refresh_token": session.refresh_token,
            "token_type": "Bearer",
            "expires_in": session.expires_in,
            "account_id": session.account_id,
            "address": session.address,
        }
    )


_AUTH_ERRORS = {
    400: OpenApiResponse(ErrorSerializer, description="malformed request"),
    401: OpenApiResponse(ErrorSerializer, description="authentication failed (one generic answer)"),
}


class AuthNonceApi(_AuthView):
    class NonceOutput(serializers.Serializer):
        nonce = serializers.CharField()
        expires_in = serializers.IntegerField()

    @extend_schema(
        operation_id="auth_nonce",
        summary="A single-use sign-in nonce (300 s)",
        responses={200: NonceOutput, **_AUTH_ERRORS},
    )
    def get(self, request: Request) -> Response:
        return Response({"nonce": signin_nonce_issue(), "expires_in": NONCE_TTL_SECONDS})


class AuthVerifyApi(_AuthView):
    class VerifyInput(serializers.Serializer):
        message = StrictCharField(max_length=MAX_MESSAGE_CHARS, trim_whitespace=False)
        signature = StrictCharField(max_length=4096)

    @extend_schema(
        operation_id="auth_verify",
        summary="Sign in with an EIP-4361 message and its signature",
        request=VerifyInput,
        responses={200: SessionOutput, **_AUTH_ERRORS},
    )
    def post(self, request: Request) -> Response:
        serializer = self.VerifyInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        return _session_response(signin_verify(message=data["message"], signature=data["signature"], now=clock.now()))


class RefreshInput(serializers.Serializer):
    refresh_token = StrictCharField(max_length=200)


class AuthRefreshApi(_AuthView):
    @extend_schema(
        operation_id="auth_refresh",
        summary="Rotate a refresh token for a new session",
        request=RefreshInput,
        responses={200: SessionOutput, **_AUTH_ERRORS},
    )
    def post(self, request: Request) -> Response:
        serializer = RefreshInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        return _session_response(
            session_refresh(refresh_token=serializer.validated_data["refresh_token"], now=clock.now())
        )


class AuthLogoutApi(_AuthView):
    @extend_schema(
        operation_id="auth_logout",
        summary="End a session (revoke its refresh token)",
        request=RefreshInput,
        responses={204: None},
    )
    def post(self, request: Request) -> Response:
        serializer = RefreshInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        session_logout(refresh_token=serializer.validated_data["refresh_token"], now=clock.now())
        return Response(status=204)


class PaymentProofInput(serializers.Serializer):
    tx_hash = StrictCharField(max_length=66)
    chain_id = StrictIntegerField(min_value=1, max_value=2**53)
    token = StrictCharField(max_length=42)
    sender = StrictCharField(max_length=42)
    amount_micro_usdc = StrictIntegerField(min_value=1)


class PurchaseApi(APIView):
    ProofInput = PaymentProofInput

    class PurchaseInput(serializers.Serializer):
        pack_size = StrictIntegerField(min_value=1, max_value=1_000_000, schema_enum=sorted(PACKS))
        payment_proof = serializers.DictField()
        idempotency_key = StrictCharField(max_length=255)

    class Purchase(PurchaseInput):
        # What the schema shows: the proof's fields (checked by ProofInput after the pack).
        payment_proof = PaymentProofInput()  # type: ignore[assignment]  # schema only

    class PurchaseOutput(serializers.Serializer):
        status = serializers.CharField()
        pack_size = serializers.IntegerField()
        credited = serializers.IntegerField(help_text="µUSD")
        tx_hash = serializers.CharField()
        log_index = serializers.IntegerField()
        balance = serializers.DictField()

    @extend_schema(
        operation_id="credits_purchase",
        summary="Buy a credit pack with an on-chain USDC payment",
        request=Purchase,
        responses={
            200: PurchaseOutput,
            400: OpenApiResponse(ErrorSerializer, description="invalid_pack_size, invalid_proof"),
            402: OpenApiResponse(ErrorSerializer, description="payment_not_confirmed"),
            403: OpenApiResponse(ErrorSerializer, description="sender_mismatch"),
            409: OpenApiResponse(ErrorSerializer, description="payment_mismatch, already_minted"),
            404: OpenApiResponse(
                ErrorSerializer, description="feature_disabled (credits flag off, or purchases not configured)"
            ),
            503: OpenApiResponse(ErrorSerializer, description="verification_unavailable"),
        },
    )
    def post(self, request: Request) -> Response:
        require_feature("credits", "credit pack purchases are currently disabled")
        principal = request.user
        assert isinstance(principal, Principal)
        serializer = self.PurchaseInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        proof = self.ProofInput(data=serializer.validated_data["payment_proof"])
        proof.is_valid(raise_exception=True)
        wallets = set(WalletIdentity.objects.filter(account_id=principal.account_id).values_list("address", flat=True))
        result = purchase_credit_pack(
            account_id=principal.account_id,
            wallets=wallets,
            pack_size=serializer.validated_data["pack_size"],
            proof=dict(proof.validated_data),
            idempotency_key=serializer.validated_data["idempotency_key"],
            now=clock.now(),
        )
        headers = {"Idempotent-Replayed": "true"} if result.replayed else None
        return Response(
            {
                "status": "minted",
                "pack_size": result.purchase.pack_size,
                "credited": result.purchase.credited_micro_usd,
                "tx_hash": result.purchase.tx_hash,
                "log_index": result.purchase.log_index,
                "balance": {
                    "account_id": result.balance.account_id,
                    "available": result.balance.available,
                    "held": result.balance.held,
                },
            },
            headers=headers,
        )


class JwkOutput(serializers.Serializer):
    kty = serializers.CharField()
    crv = serializers.CharField()
    x = serializers.CharField()
    y = serializers.CharField()
    kid = serializers.CharField()
    use = serializers.CharField()
    alg = serializers.CharField()


class JwksOutput(serializers.Serializer):
    keys = JwkOutput(many=True)


class JwksApi(APIView):
    """The public keys of finn's access tokens (current and still-valid previous ones)."""

    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = []

    @extend_schema(
        operation_id="jwks", summary="JSON Web Key Set of the access-token signing keys", responses={200: JwksOutput}
    )
    def get(self, request: Request) -> Response:
        return Response(keyring().jwks(), headers={"Cache-Control": "public, max-age=300"})


class ModelAccuracyApi(APIView):
    class AccuracyOutput(serializers.Serializer):
        model = serializers.CharField()
        since = serializers.DateTimeField()
        until = serializers.DateTimeField()
        scope = serializers.CharField(help_text="'account' (the caller's entries) or 'all' (staff)")
        commits = serializers.IntegerField(help_text="metered commits of the model reserved in the window")
        ratio = serializers.DictField(
            child=serializers.FloatField(allow_null=True), help_text="actual / hold: p50, p90, p99 (null: no commits)"
        )
        overcapture_rate = serializers.FloatField(allow_null=True, help_text="share of commits charged above the hold")
        charged = serializers.IntegerField(help_text="µUSD charged by those commits")
        held = serializers.IntegerField(help_text="µUSD their holds were")

    @extend_schema(
        operation_id="model_accuracy",
        summary="How well holds fit actual costs for a model (size holds by it)",
        parameters=[
            OpenApiParameter("window_seconds", int, description="60 to 2,592,000; default 86,400"),
            OpenApiParameter("account_id", int, description="staff: one account (default: every account)"),
        ],
        responses={
            200: AccuracyOutput,
            400: OpenApiResponse(ErrorSerializer, description="unknown_model or invalid_window"),
            401: OpenApiResponse(ErrorSerializer, description="not_authenticated"),
        },
    )
    def get(self, request: Request, model: str) -> Response:
        principal = principal_of(request)
        model_price(model)  # 400 unknown_model
        window = _int_param(request, "window_seconds", 86_400)
        account_id = _int_param(request, "account_id", None) if principal.is_staff else principal.account_id
        found = model_accuracy(model=model, now=clock.now(), window_seconds=window, account_id=account_id)
        return Response(
            {
                "model": found.model,
                "since": found.since,
                "until": found.until,
                "scope": "all" if account_id is None else "account",
                "commits": found.commits,
                "ratio": {"p50": found.p50, "p90": found.p90, "p99": found.p99},
                "overcapture_rate": found.overcapture_rate,
                "charged": found.charged,
                "held": found.held,
            }
        )


def _int_param(request: Request, name: str, default: int | None) -> Any:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or len(raw) > 12:
        raise InvalidRequest(f"{name} must be a positive integer", reason=f"invalid_{name}")
    return int(raw)


def _agent_access(principal: Principal, account_id: int, *, write: bool) -> None:
    """Staff, or the agent wallet's owner (signed in with the owner address, or that wallet's
    account); the agent itself may read its policy, not change it. Others: 404."""
    wallet = AgentWallet.objects.filter(account_id=account_id).values("owner_address").first()
    if wallet is None:
        raise AccountNotFound(f"agent {account_id} not found")
    if principal.is_staff:
        return
    owner = wallet["owner_address"]
    if (
        principal.actor == owner
        or WalletIdentity.objects.filter(account_id=principal.account_id, address=owner).exists()
    ):
        return
    if principal.account_id == account_id:
        if write:
            raise Forbidden("an agent cannot change its own budget policy; its owner can")
        return
    raise AccountNotFound(f"agent {account_id} not found")


class AgentPolicyApi(APIView):
    class PolicySerializer(serializers.Serializer):
        per_request_max = StrictIntegerField(
            allow_null=True, min_value=1, help_text="µUSD one hold may reach (extends included); null: no limit"
        )
        hourly_spend_limit = StrictIntegerField(allow_null=True, min_value=1, help_text="µUSD per rolling hour")
        hourly_request_limit = StrictIntegerField(
            allow_null=True, min_value=1, max_value=2**31 - 1, help_text="reserves per rolling hour"
        )
        allowed_models = serializers.ListField(
            child=StrictCharField(max_length=100),
            allow_null=True,
            max_length=100,
            help_text="null: any model; a list: only metered reserves of these models",
        )

    class PolicyOutput(PolicySerializer):
        account_id = serializers.IntegerField()

    _responses = {
        401: OpenApiResponse(ErrorSerializer, description="not_authenticated"),
        404: OpenApiResponse(ErrorSerializer, description="account_not_found (no such agent, or not yours)"),
    }

    @extend_schema(
        operation_id="agent_policy_get",
        summary="An agent wallet's budget policy (beside its daily cap)",
        responses={200: PolicyOutput, **_responses},
    )
    def get(self, request: Request, account_id: int) -> Response:
        principal = principal_of(request)
        _agent_access(principal, account_id, write=False)
        return Response(asdict(spend_policy_get(account_id=account_id)))

    @extend_schema(
        operation_id="agent_policy_set",
        summary="Set an agent wallet's budget policy (its owner, or staff); every rule null removes it",
        request=PolicySerializer,
        responses={
            200: PolicyOutput,
            400: OpenApiResponse(ErrorSerializer, description="invalid_request"),
            403: OpenApiResponse(ErrorSerializer, description="permission_denied (the agent itself)"),
            **_responses,
        },
    )
    def put(self, request: Request, account_id: int) -> Response:
        principal = principal_of(request)
        _agent_access(principal, account_id, write=True)
        serializer = self.PolicySerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        policy = spend_policy_set(
            account_id=account_id,
            actor=principal.actor or f"account:{principal.account_id}",
            now=clock.now(),
            **serializer.validated_data,
        )
        return Response(asdict(policy))
