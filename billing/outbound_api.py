"""The API of outbound webhooks: an account registers endpoints, rotates secrets, reads deliveries."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing import services
from billing.api import ERRORS, caller_scope, principal_of
from billing.models import OUTBOUND_EVENT_TYPES, WebhookDelivery, WebhookEndpoint
from finn import clock
from finn.errors import Forbidden, NotFound
from finn.fields import ErrorSerializer, StrictIntegerField


class WebhookEndpointOutput(serializers.Serializer):
    id = serializers.IntegerField()
    account_id = serializers.IntegerField()
    url = serializers.URLField()
    event_types = serializers.ListField(child=serializers.CharField())
    active = serializers.BooleanField()
    created_at = serializers.DateTimeField()


class WebhookEndpointList(serializers.Serializer):
    endpoints = WebhookEndpointOutput(many=True)


class WebhookEndpointCreated(serializers.Serializer):
    endpoint = WebhookEndpointOutput()
    secret = serializers.CharField(help_text="whsec_…: shown in this answer only")


def _endpoint_data(endpoint: WebhookEndpoint) -> dict[str, Any]:
    return {
        "id": endpoint.pk, "account_id": endpoint.account_id, "url": endpoint.url,
        "event_types": list(endpoint.event_types), "active": endpoint.active,
        "created_at": endpoint.created_at.isoformat(),
    }  # fmt: skip


class WebhookEndpointsApi(APIView):
    class CreateInput(serializers.Serializer):
        url = serializers.URLField(max_length=2000)
        event_types = serializers.ListField(
            child=serializers.ChoiceField(choices=OUTBOUND_EVENT_TYPES), min_length=1, max_length=10
        )
        account_id = StrictIntegerField(required=False, min_value=1, help_text="staff only: for this account")

    @extend_schema(
        operation_id="webhook_endpoints_list",
        summary="The caller's webhook endpoints",
        responses={200: WebhookEndpointList},
    )
    def get(self, request: Request) -> Response:
        principal = principal_of(request)
        rows = WebhookEndpoint.objects.filter(account_id=principal.account_id, active=True).order_by("pk")[:50]
        return Response({"endpoints": [_endpoint_data(e) for e in rows]})

    @extend_schema(
        operation_id="webhook_endpoint_create",
        summary="Register an endpoint for event types; the signing secret is in this answer only",
        request=CreateInput,
        responses={
            201: WebhookEndpointCreated,
            403: OpenApiResponse(ErrorSerializer, description="permission_denied: another account, not staff"),
            **ERRORS,
        },
    )
    def post(self, request: Request) -> Response:
        principal = principal_of(request)
        serializer = self.CreateInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        account_id = principal.account_id
        if data.get("account_id") and data["account_id"] != account_id:
            if not principal.is_staff:
                raise Forbidden("registering for another account is for finance staff")
            account_id = data["account_id"]
        endpoint, secret = services.endpoint_create(
            account_id=account_id, url=data["url"], event_types=data["event_types"], now=clock.now(),
            actor=principal.actor,
        )  # fmt: skip
        return Response({"endpoint": _endpoint_data(endpoint), "secret": secret}, status=status.HTTP_201_CREATED)


class WebhookEndpointApi(APIView):
    @extend_schema(
        operation_id="webhook_endpoint_disable", summary="Stop sending to an endpoint", responses={204: None, **ERRORS}
    )
    def delete(self, request: Request, endpoint_id: int) -> Response:
        principal = principal_of(request)
        services.endpoint_disable(
            endpoint_id=endpoint_id, account_id=caller_scope(principal), now=clock.now(), actor=principal.actor
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebhookEndpointRotateApi(APIView):
    @extend_schema(
        operation_id="webhook_endpoint_secret_rotate",
        summary="A new signing secret (shown once); the old one keeps signing beside it for 24 h",
        request=None,
        responses={200: inline_serializer("WebhookSecretRotated", {"secret": serializers.CharField()}), **ERRORS},
    )
    def post(self, request: Request, endpoint_id: int) -> Response:
        principal = principal_of(request)
        secret = services.endpoint_secret_rotate(
            endpoint_id=endpoint_id, account_id=caller_scope(principal), now=clock.now(), actor=principal.actor
        )
        return Response({"secret": secret})


class WebhookDeliveriesApi(APIView):
    @extend_schema(
        operation_id="webhook_endpoint_deliveries",
        summary="The endpoint's latest 50 deliveries, newest first",
        responses={200: OpenApiResponse(description="deliveries"), **ERRORS},
    )
    def get(self, request: Request, endpoint_id: int) -> Response:
        scope = caller_scope(principal_of(request))
        endpoints = WebhookEndpoint.objects.filter(pk=endpoint_id)
        if scope is not None:
            endpoints = endpoints.filter(account_id=scope)
        if not endpoints.exists():
            raise NotFound(f"webhook endpoint {endpoint_id} not found")
        rows = WebhookDelivery.objects.filter(endpoint_id=endpoint_id).order_by("-created_at")[:50]
        deliveries = [
            {"id": d.pk, "event_id": d.event_id, "event_type": d.event_type, "status": d.status,
             "attempts": d.attempts, "last_status_code": d.last_status_code, "created_at": d.created_at.isoformat(),
             "delivered_at": d.delivered_at.isoformat() if d.delivered_at else None}
            for d in rows
        ]  # fmt: skip
        return Response({"deliveries": deliveries})
