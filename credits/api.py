"""Credits HTTP API: model prices and cost estimates."""

from __future__ import annotations

from dataclasses import asdict

from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.selectors import agent_budget
from credits.pricing import estimate_reserve_cost, model_prices
from credits.pricing_config import PER_MILLION
from credits.units import Rounding, micro_usd_to_cu
from finn.auth import Principal
from finn.fields import ErrorSerializer, StrictIntegerField

MAX_TOKENS = 10_000_000


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
                    }
                    for price in model_prices()
                ]
            }
        )


class EstimateApi(APIView):
    class EstimateInput(serializers.Serializer):
        model = serializers.CharField(max_length=100)
        input_tokens = StrictIntegerField(min_value=0, max_value=MAX_TOKENS)
        max_output_tokens = StrictIntegerField(min_value=0, max_value=MAX_TOKENS)

    class EstimateOutput(serializers.Serializer):
        model = serializers.CharField()
        estimated_cost = serializers.IntegerField(help_text="µUSD to reserve (rounded up)")
        estimated_cost_cu = serializers.IntegerField(help_text="the same in credit units (rounded up)")

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
        cost = estimate_reserve_cost(
            model=data["model"], input_tokens=data["input_tokens"], max_output_tokens=data["max_output_tokens"]
        )
        return Response(
            {
                "model": data["model"],
                "estimated_cost": cost,
                "estimated_cost_cu": micro_usd_to_cu(cost, rounding=Rounding.CEIL),
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
            now=timezone.now(),
            scope_account_id=None if principal.is_staff else principal.account_id,
        )
        return Response(self.BudgetOutput(asdict(budget)).data)
