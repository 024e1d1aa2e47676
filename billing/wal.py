"""Replay the exported audit log into Redis, and rebuild balances from postings.

The chain, verify and export live beside the audit table in ``finn/audit_chain.py``;
these two read billing's meaning of the records (balances, holds, entries).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from django.db import connection, transaction

from billing.selectors import BALANCE_DIFF_SQL
from finn.audit import AuditRecord, audit_append_many, payload_crc32
from finn.audit_chain import SEGMENT_PREFIX
from finn.redis import get_redis

logger = logging.getLogger(__name__)

CURSOR_KEY = "billing:wal:last_sequence"
PENDING_COUNT_KEY = "billing:pending_count"


# --- replay -------------------------------------------------------------------


@dataclass
class ReplayReport:
    processed: int = 0
    skipped: int = 0
    corrupted: int = 0
    truncated_bytes: int = 0
    last_sequence: int | None = None
    seconds: float = 0.0


def _entry_key(entry_id: str) -> str:
    return f"billing:entry:{entry_id}"


def _balance_key(account_id: str) -> str:
    return f"billing:balance:{account_id}"


def _apply(pipe: Any, envelope: dict[str, Any]) -> bool:
    """Queue the Redis effects of one record; False for an unknown event type."""
    event = envelope["event_type"]
    payload = envelope["payload"]
    entry_id = str(envelope.get("billing_entry_id") or "")
    account = payload.get("account_id")
    estimate = int(payload["estimated_cost"]) if payload.get("estimated_cost") is not None else 0
    actual = int(payload["actual_cost"]) if payload.get("actual_cost") is not None else 0
    state = payload.get("to_state")

    def set_entry(**fields: Any) -> None:
        pipe.hset(_entry_key(entry_id), mapping={k: str(v) for k, v in fields.items() if v is not None})

    def move(available: int, held: int) -> None:
        if available:
            pipe.hincrby(_balance_key(account), "available", available)
        if held:
            pipe.hincrby(_balance_key(account), "held", held)

    if event == "billing_reserve":
        set_entry(state=state, account_id=account, estimated_cost=estimate, correlation_id=envelope["correlation_id"])
        move(-estimate, estimate)
    elif event == "billing_reserve_extend":
        set_entry(estimated_cost=estimate)
        added = int(payload["additional_cost"])
        move(-added, added)
    elif event == "billing_commit":
        set_entry(state=state, actual_cost=actual)
        move(estimate - actual, -estimate)
    elif event in ("billing_release", "billing_reserve_expired"):
        set_entry(state=state)
        move(estimate, -estimate)
    elif event == "billing_void":
        set_entry(state=state)
        move(actual, 0)
    elif event == "billing_finalize_pending":
        set_entry(state=state)
        pipe.incr(PENDING_COUNT_KEY)
    elif event in ("billing_finalize_ack", "billing_finalize_fail"):
        set_entry(state=state)
        if payload.get("from_state") == "FINALIZE_PENDING":
            pipe.decr(PENDING_COUNT_KEY)
    elif event == "credit_mint":
        move(int(payload["amount"]), 0)
    elif event == "credit_spend":
        move(-int(payload["amount"]), 0)
    elif event in (
        "billing_reconciliation",
        "billing_ledger_check",
        "billing_balance_repair",
        "billing_finalize_replay_requested",
        "webhook_replay",
        "webhook_endpoint_created",
        "webhook_endpoint_secret_rotated",
        "webhook_endpoint_disabled",
        "webhook_delivery_replay",
        "api_key_issued",
        "api_key_revoked",
        "second_factor_enrolled",
    ):
        pass  # recorded for the audit trail; no billing state to rebuild
    else:
        return False
    return True


def audit_replay(*, directory: Path) -> ReplayReport:
    """Rebuild Redis billing state from exported segments, idempotently.

    Records at or below the cursor are skipped, so a second run changes
    nothing; each record and the cursor move together (MULTI/EXEC). A torn
    last line of the last segment (a crash mid-write) is truncated away.
    """
    started = time.monotonic()
    report = ReplayReport()
    client = get_redis()
    raw_cursor: str | None = client.get(CURSOR_KEY)  # type: ignore[assignment]
    cursor_value = int(raw_cursor) if raw_cursor else 0
    segments = sorted(p for p in directory.iterdir() if p.name.startswith(SEGMENT_PREFIX) and p.suffix == ".jsonl")
    for index, segment in enumerate(segments):
        is_last_segment = index == len(segments) - 1
        data = segment.read_bytes()
        lines = data.split(b"\n")
        trailing_complete = data.endswith(b"\n")
        offset = 0
        for position, raw in enumerate(lines):
            is_last_line = position == len(lines) - 1
            line_bytes = len(raw) + (0 if is_last_line else 1)
            if not raw.strip():
                offset += line_bytes
                continue
            try:
                envelope = json.loads(raw)
            except json.JSONDecodeError:
                if is_last_segment and is_last_line and not trailing_complete:
                    with segment.open("r+b") as handle:
                        handle.truncate(offset)
                    report.truncated_bytes = len(raw)
                    logger.warning("torn last record truncated", extra={"segment": segment.name})
                else:
                    report.corrupted += 1
                offset += line_bytes
                continue
            offset += line_bytes
            sequence = int(envelope.get("wal_sequence") or 0)
            if sequence <= cursor_value:
                report.skipped += 1
                continue
            if int(envelope.get("schema_version", 1)) > 1:
                report.skipped += 1
                continue
            if payload_crc32(envelope.get("payload")) != envelope.get("checksum"):
                report.corrupted += 1
                continue
            pipe = client.pipeline(transaction=True)
            if not _apply(pipe, envelope):
                report.skipped += 1
                pipe.reset()
                pipe = client.pipeline(transaction=True)
            else:
                report.processed += 1
            pipe.set(CURSOR_KEY, sequence)
            pipe.execute()
            cursor_value = sequence
            report.last_sequence = sequence
    report.seconds = time.monotonic() - started
    return report


# --- rebuild balances ---------------------------------------------------------


@dataclass
class RebuildReport:
    accounts: int = 0
    differences: list[tuple[int, int, int, int, int]] = field(default_factory=list)
    repaired: int = 0
    seconds: float = 0.0


def rebuild_balances(*, repair: bool = False, actor: str = "rebuild_balances", now: datetime) -> RebuildReport:
    """Recompute every balance from postings (a shadow) and diff with the live rows.

    With ``repair`` the live rows are set to the shadow, each change with an
    audit record, in one transaction holding the rows it changes.
    """
    started = time.monotonic()
    report = RebuildReport()
    with transaction.atomic(durable=True), connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM billing_account WHERE kind <> 'system'")
        report.accounts = int(cursor.fetchone()[0])
        if repair:
            cursor.execute("LOCK TABLE billing_account IN SHARE ROW EXCLUSIVE MODE")
        cursor.execute(BALANCE_DIFF_SQL)
        report.differences = [tuple(int(v) for v in row) for row in cursor.fetchall()]  # type: ignore[misc]
        if repair and report.differences:
            cursor.execute(
                "UPDATE billing_account a SET available = v.available, held = v.held, version = a.version + 1"
                " FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[]) AS v(id, available, held) WHERE a.id = v.id",
                [
                    [d[0] for d in report.differences],
                    [d[3] for d in report.differences],
                    [d[4] for d in report.differences],
                ],
            )
            audit_append_many(
                [
                    AuditRecord(
                        event_type="billing_balance_repair",
                        payload={
                            "account_id": str(account_id),
                            "row": {"available": str(row_available), "held": str(row_held)},
                            "postings": {"available": str(available), "held": str(held)},
                        },
                        correlation_id=f"rebuild-{now.isoformat()}",
                        account_id=account_id,
                        actor=actor,
                        reason="balance row differed from the sum of its postings",
                    )
                    for account_id, row_available, row_held, available, held in report.differences
                ],
                now=now,
            )
            report.repaired = len(report.differences)
    report.seconds = time.monotonic() - started
    return report
