"""OpenAPI schema post-processing: the refusals every API route can give, documented on each.

Views document their own answers (success and the refusals of their domain). What the shared
machinery can answer on any route is added here once, so the schema lists every status a client
can see: 400 (bad input, malformed JSON, wrong content type), 401 on routes that take
credentials, 413 on routes with a body, 429 (the rate limits of ``finn.ratelimit``) and 503
(a dependency outage: the database, or Redis where a route fails closed). A view's own wording
for a status wins.

The field extensions document finn's strict fields exactly (bounds, allowed values), so a
schema-valid request is one finn accepts. Imported by ``FinnConfig.ready``.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiSerializerFieldExtension

from finn.fields import IDENTIFIER_PATTERN

_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
_RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds to wait before retrying"}}
_EVERY_ROUTE = {
    "400": "invalid_request, malformed_json or unsupported_media_type",
    "429": "rate_limited (Retry-After says when to retry)",
    "503": "database_unavailable or dependency_unavailable: an outage, retry after Retry-After",
}
_WITH_CREDENTIALS = {"401": "not_authenticated: missing, invalid, revoked or expired credentials"}
_WITH_BODY = {"413": "payload_too_large: the body is over the size limit (README, Security)"}
_METHODS = ("get", "put", "post", "delete", "patch")


def _takes_credentials(operation: dict[str, Any]) -> bool:
    return any(requirement for requirement in operation.get("security", []))


def shared_refusals(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: add the shared refusals to every operation."""
    for path_item in result.get("paths", {}).values():
        for method, operation in path_item.items():
            if method not in _METHODS:
                continue
            extra = dict(_EVERY_ROUTE)
            if _takes_credentials(operation):
                extra.update(_WITH_CREDENTIALS)
            if "requestBody" in operation:
                extra.update(_WITH_BODY)
            responses = operation.setdefault("responses", {})
            for status, description in extra.items():
                response = responses.setdefault(status, {"content": _ERROR, "description": description})
                if status in ("429", "503"):
                    response.setdefault("headers", _RETRY_AFTER)
    return result


def _documented_enum(field: Any) -> list[Any] | None:
    values = getattr(field, "schema_enum", None)
    if values is None:
        return None
    return list(values() if callable(values) else values)


class StrictIntegerFieldExtension(OpenApiSerializerFieldExtension):
    """``StrictIntegerField``: an int64 with the field's own bounds (and documented values)."""

    target_class = "finn.fields.StrictIntegerField"
    match_subclasses = True

    def map_serializer_field(self, auto_schema: Any, direction: Any) -> dict[str, Any]:
        field = self.target
        schema: dict[str, Any] = {
            "type": "integer",
            "format": "int64",
            "minimum": field.min_value,
            "maximum": field.max_value,
        }
        enum = _documented_enum(field)
        if enum is not None:
            schema["enum"] = enum
        return schema


class StrictCharFieldExtension(OpenApiSerializerFieldExtension):
    """``StrictCharField``: DRF's string schema, plus the documented values when it has them."""

    target_class = "finn.fields.StrictCharField"
    match_subclasses = True

    def map_serializer_field(self, auto_schema: Any, direction: Any) -> dict[str, Any]:
        schema: dict[str, Any] = auto_schema._map_serializer_field(self.target, direction, bypass_extensions=True)
        enum = _documented_enum(self.target)
        if enum is not None:
            schema["enum"] = enum
        return schema


class TokenFieldExtension(OpenApiSerializerFieldExtension):
    """``TokenField``: the characters and length it accepts, as a pattern."""

    target_class = "finn.fields.TokenField"
    match_subclasses = True

    def map_serializer_field(self, auto_schema: Any, direction: Any) -> dict[str, Any]:
        return {"type": "string", "pattern": IDENTIFIER_PATTERN}
