"""Append an audit record (finn's write-ahead log) in the caller's transaction.

The CRC32 covers the canonical JSON of the payload: keys sorted, compact
separators, UTF-8. Amounts in payloads are decimal strings, so a reader in
any language reproduces the checksum byte for byte.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection
from psycopg.types.json import Jsonb

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
) -> int:
    """Insert one audit row; must run inside the business transaction; return its sequence.

    A plain INSERT rather than Model.objects.create: it runs in every billing
    transaction, and the ORM's per-call overhead was measurable there.
    """
    params: list[Any] = [
        SCHEMA_VERSION,
        event_type,
        billing_entry_id,
        account_id,
        correlation_id,
        actor,
        reason,
        Jsonb(payload),
        payload_crc32(payload),
        now,
    ]
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO finn_auditevent (schema_version, event_type, billing_entry_id, account_id, correlation_id,"
            " actor, reason, payload, crc32, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " RETURNING sequence",
            params,
        )
        return int(cursor.fetchone()[0])


@dataclass(frozen=True)
class AuditRecord:
    event_type: str
    payload: dict[str, Any]
    correlation_id: str
    billing_entry_id: str | None = None
    account_id: int | None = None
    actor: str = ""
    reason: str = ""


def audit_append_many(records: list[AuditRecord], *, now: datetime) -> int:
    """Insert many audit rows in one statement (batch jobs such as hold expiry)."""
    if not records:
        return 0
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO finn_auditevent (schema_version, event_type, billing_entry_id, account_id, correlation_id,"
            " actor, reason, payload, crc32, created_at)"
            " SELECT %s, r.event_type, r.entry_id, r.account_id, r.correlation_id, r.actor, r.reason, r.payload,"
            " r.crc32, %s FROM unnest(%s::varchar[], %s::varchar[], %s::bigint[], %s::varchar[], %s::varchar[],"
            " %s::text[], %s::jsonb[], %s::varchar[])"
            " AS r(event_type, entry_id, account_id, correlation_id, actor, reason, payload, crc32)",
            [
                SCHEMA_VERSION,
                now,
                [r.event_type for r in records],
                [r.billing_entry_id for r in records],
                [r.account_id for r in records],
                [r.correlation_id for r in records],
                [r.actor for r in records],
                [r.reason for r in records],
                [Jsonb(r.payload) for r in records],
                [payload_crc32(r.payload) for r in records],
            ],
        )
        return cursor.rowcount
