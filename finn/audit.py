"""Append an audit record (finn's write-ahead log) in the caller's transaction.

The CRC32 covers the canonical JSON of the payload: keys sorted, compact
separators, UTF-8. Amounts in payloads are decimal strings, so a reader in
any language reproduces the checksum byte for byte.
"""

from __future__ import annotations

import json
import zlib
from datetime import datetime
from typing import Any

from finn.models import AuditEvent

SCHEMA_VERSION = 1


def canonical_json(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def payload_crc32(payload: dict[str, Any]) -> str:
    return f"{zlib.crc32(canonical_json(payload)) & 0xFFFFFFFF:08x}"


def audit_append(
    *,
    event_type: str,
    payload: dict[str, Any],
    correlation_id: str,
    now: datetime,
    billing_entry_id: str | None = None,
    account_id: int | None = None,
    actor: str = "",
    reason: str = "",
) -> AuditEvent:
    """Insert one audit row; must run inside the business transaction."""
    return AuditEvent.objects.create(
        schema_version=SCHEMA_VERSION,
        event_type=event_type,
        billing_entry_id=billing_entry_id,
        account_id=account_id,
        correlation_id=correlation_id,
        actor=actor,
        reason=reason,
        payload=payload,
        crc32=payload_crc32(payload),
        created_at=now,
    )
