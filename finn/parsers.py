"""DRF's JSON parser, decoding through ``finn.untrusted_json``.

DRF's own ``JSONParser`` reads the whole stream and lets a ``RecursionError``
from deeply nested input escape as a 500. This one reads at most
``API_MAX_BODY_BYTES`` + 1 bytes, and every refusal is a ``ParseError`` (400
``malformed_json``) or 413 ``payload_too_large``.
"""

from __future__ import annotations

from typing import IO, Any

from django.conf import settings
from rest_framework import exceptions, parsers

from finn.untrusted_json import UntrustedJsonError, json_loads_untrusted


class PayloadTooLarge(exceptions.APIException):
    status_code = 413
    default_code = "payload_too_large"
    default_detail = "request body too large"


class UntrustedJSONParser(parsers.JSONParser):
    def parse(self, stream: IO[bytes], media_type: str | None = None, parser_context: Any = None) -> Any:
        limit = settings.API_MAX_BODY_BYTES
        raw = stream.read(limit + 1)
        if len(raw) > limit:
            raise PayloadTooLarge(f"request bodies are limited to {limit} bytes")
        try:
            return json_loads_untrusted(raw, max_bytes=limit)
        except UntrustedJsonError as exc:
            raise exceptions.ParseError(exc.message) from None
