"""Serializer fields shared by every app's API."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from rest_framework import serializers

MAX_INT64 = 2**63 - 1

# The values a field documents in the API schema (a service may check them with its own
# error code); a callable is read when the schema is generated (configured model names).
SchemaEnum = Sequence[Any] | Callable[[], Sequence[Any]] | None


class StrictIntegerField(serializers.Field):
    """A JSON integer, nothing else: no floats, no strings, no booleans.

    DRF's IntegerField accepts ``"10"`` and ``10.0``; on a money path that
    leniency hides client bugs (and floats), so amounts must be real integers.
    The schema (``finn.openapi``) says int64 with these bounds.
    """

    default_error_messages = {
        "not_integer": "must be a JSON integer (no floats, strings or booleans)",
        "too_small": "must be at least {min_value}",
        "too_large": "must be at most {max_value}",
    }

    def __init__(
        self, *, min_value: int = 0, max_value: int = MAX_INT64, schema_enum: SchemaEnum = None, **kwargs: Any
    ) -> None:
        self.min_value = min_value
        self.max_value = max_value
        self.schema_enum = schema_enum
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("not_integer")
        if data < self.min_value:
            self.fail("too_small", min_value=self.min_value)
        if data > self.max_value:
            self.fail("too_large", max_value=self.max_value)
        return int(data)

    def to_representation(self, value: int) -> int:
        return int(value)


class StrictCharField(serializers.CharField):
    """A JSON string, nothing else (DRF's CharField turns ``5`` into ``"5"``)."""

    def __init__(self, *, schema_enum: SchemaEnum = None, **kwargs: Any) -> None:
        self.schema_enum = schema_enum
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return str(super().to_internal_value(data))


IDENTIFIER_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
_SAFE_TOKEN = re.compile(IDENTIFIER_PATTERN)


class TokenField(serializers.CharField):
    """A short client-supplied identifier (correlation id and the like)."""

    default_error_messages = {"invalid_token": "must be 1-128 characters of A-Z a-z 0-9 . _ : -"}

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        value = str(super().to_internal_value(data))
        if not _SAFE_TOKEN.match(value):
            self.fail("invalid_token")
        return value


class ErrorSerializer(serializers.Serializer):
    error = serializers.CharField()
    code = serializers.CharField()
