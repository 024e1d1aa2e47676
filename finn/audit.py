"""Append an audit record (finn's write-ahead log) in the caller's transaction.

The CRC32 covers the canonical JSON of the payload: keys sorted, compact
separators, UTF-8. Amounts in payloads are decimal strings, so a reader in
any language reproduces the checksum byte for byte.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection
from psycopg.types.json import Jsonb

SCHEMA_VERSION = 1

# Who did it, from where, verified how: set around a staff action (finn.second_factor) and
# written into the payload of every audit row appended meanwhile ("by"), so the CRC and the
# hash chain cover it — unlike the actor/reason columns, which a reader could not verify.
_context: ContextVar[dict[str, str] | None] = ContextVar("finn_audit_context", default=None)


@contextmanager
def audit_context(by: dict[str, str]) -> Iterator[None]:
    token = _context.set(dict(by))
    try:
        yield
    finally:
        _context.reset(token)


def _with_context(payload: dict[str, Any]) -> dict[str, Any]:
    by = _context.get()
    return payload if by is None else {**payload, "by": by}


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
    payload = _with_context(payload)
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
    payloads = [_with_context(r.payload) for r in records]
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
                [Jsonb(payload) for payload in payloads],
                [payload_crc32(payload) for payload in payloads],
            ],
        )
        return cursor.rowcount
