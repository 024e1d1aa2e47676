"""The API's front door: the index at /api/v1/, the OpenAPI schema, Swagger UI and ReDoc.

The documentation pages are served by finn itself (drf-spectacular-sidecar's copies of
swagger-ui-dist and redoc): no CDN, so they load on a machine without internet and under
the strict Content-Security-Policy (``script-src 'self' 'nonce-…'``). The templates put the
response's nonce on their one inline ``<script>`` and ``<style>``.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, inline_serializer
from drf_spectacular.views import SpectacularRedocView, SpectacularSwaggerView
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import APIView

# (name, url name, what it is): the index lists these with absolute links.
INDEX_LINKS = (
    ("docs", "docs", "Swagger UI: try the API in the browser"),
    ("redoc", "redoc", "ReDoc: the API reference"),
    ("schema", "schema", "OpenAPI 3 schema (YAML; ?format=json for JSON)"),
    ("health", "health", "200 when PostgreSQL and Redis answer"),
    ("jwks", "jwks", "public keys of finn's access tokens"),
    ("models", "models", "models and their prices"),
    ("entries", "billing-entry-reserve", "POST: reserve an estimate (then commit, release or void)"),
    ("my_balance", "account-balance-me", "the caller's balance"),
    ("x402", "x402-invoke", "pay per request with x402"),
    ("auth_nonce", "auth-nonce", "Sign-In with Ethereum: a challenge"),
)


class ApiIndexApi(APIView):
    """What the API offers, with links: the first thing a new integrator opens."""

    authentication_classes = []
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="api_index",
        summary="Index of the API: links to the docs, schema, health and main resources",
        responses={
            200: inline_serializer(
                "ApiIndexOutput",
                {
                    "name": serializers.CharField(),
                    "version": serializers.CharField(),
                    "links": serializers.DictField(
                        child=inline_serializer(
                            "ApiIndexLink", {"href": serializers.URLField(), "title": serializers.CharField()}
                        )
                    ),
                },
            )
        },
    )
    def get(self, request: Request) -> Response:
        links = {
            name: {"href": reverse(url_name, request=request), "title": title} for name, url_name, title in INDEX_LINKS
        }
        return Response({"name": "finn billing API", "version": "v1", "links": links})


class SwaggerUiView(SpectacularSwaggerView):
    template_name = "docs/swagger_ui.html"


class RedocView(SpectacularRedocView):
    template_name = "docs/redoc.html"
