"""An account's statement over the API (billing/statements.py builds it; the admin exports the same)."""

from __future__ import annotations

from collections.abc import Iterable

from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import BaseParser
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.views import APIView

from billing import statements
from billing.api import ERRORS, caller_scope, principal_of
from billing.errors import AccountNotFound
from finn import clock


class _OwnFormatParameter(BaseContentNegotiation):
    """``?format=`` is the statement's (json|csv), not DRF's renderer override: JSON renders errors."""

    def select_parser(self, request: Request, parsers: Iterable[BaseParser]) -> BaseParser | None:
        return next(iter(parsers), None)

    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        renderer = next(iter(renderers))
        return renderer, renderer.media_type


class AccountStatementApi(APIView):
    content_negotiation_class = _OwnFormatParameter

    @extend_schema(
        operation_id="account_statement",
        summary="A statement: opening balance, every posting with its running balance, closing balance",
        description=(
            "The period is [from, to) by journal time (at most 400 days; `to` defaults to now). "
            "Streamed; amounts are µUSD integers in JSON, USD decimals and µUSD in CSV."
        ),
        parameters=[
            OpenApiParameter("from", str, required=True, description="ISO 8601 with offset, e.g. 2026-12-01T00:00:00Z"),
            OpenApiParameter("to", str, description="ISO 8601 with offset; default now"),
            OpenApiParameter("format", str, enum=["json", "csv"], description="default json"),
        ],
        responses={
            (200, "application/json"): OpenApiResponse(OpenApiTypes.OBJECT, description="the statement"),
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="the statement as CSV"),
            **ERRORS,
        },
    )
    def get(self, request: Request, account_id: int) -> StreamingHttpResponse:
        scope = caller_scope(principal_of(request))
        if scope is not None and scope != account_id:
            raise AccountNotFound(f"account {account_id} not found")
        start = statements.parse_instant(request.query_params.get("from"), "from")
        end = statements.parse_instant(request.query_params.get("to"), "to", default=clock.now())
        fmt = str(request.query_params.get("format", "json"))[:8]
        return statements.statement_response(account_id=account_id, start=start, end=end, fmt=fmt)
