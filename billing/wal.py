"""The audit log as a write-ahead log: hash chain, verify, export, replay, rebuild.

Chain: each record's ``chain_hash = sha256(prev_hash | sequence | event_type |
billing_entry_id | crc32)`` and ``chain_prev`` is the previous record's
sequence (genesis: sequence 0, hash of 64 zeros). Writers never take a lock
for it: a beat task links records in batches, and only records inserted more
than ``CHAIN_LAG_SECONDS`` ago, so every transaction that drew a smaller
sequence has finished (billing transactions last milliseconds). Records not
yet linked are the "unchained tail", reported by verify.

Export writes JSONL segments ``billing-wal-<first seq>.jsonl``; replay
rebuilds the Redis billing state from them, idempotently (a cursor key).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from django.db import connection, transaction

from billing.selectors import BALANCE_DIFF_SQL
from finn.audit import AuditRecord, audit_append_many, canonical_json
from finn.locks import AdvisoryLock, drain_batches
from finn.redis import get_redis

logger = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64
CHAIN_LAG_SECONDS = 60
SEGMENT_MAX_BYTES = 1024**3
SEGMENT_PREFIX = "billing-wal-"
CURSOR_KEY = "billing:wal:last_sequence"
PENDING_COUNT_KEY = "billing:pending_count"


def chain_hash(prev_hash: str, sequence: int, event_type: str, billing_entry_id: str | None, crc32: str) -> str:
    material = f"{prev_hash}|{sequence}|{event_type}|{billing_entry_id or ''}|{crc32}"
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


def _crc(payload: Any) -> str:
    return f"{zlib.crc32(canonical_json(payload)) & 0xFFFFFFFF:08x}"


# --- chaining -----------------------------------------------------------------


def audit_chain(*, batch_size: int = 5000, max_batches: int = 200, lag_seconds: int = CHAIN_LAG_SECONDS) -> int:
    """Link unchained records older than the lag, in sequence order; return how many."""
    linked = drain_batches(
        AdvisoryLock.AUDIT_CHAIN,
        lambda: _chain_batch(batch_size=batch_size, lag_seconds=lag_seconds),
        batch_size=batch_size,
        max_batches=max_batches,
    )
    return linked or 0


@transaction.atomic(durable=True)
def _chain_batch(*, batch_size: int, lag_seconds: int) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT sequence, chain_hash FROM finn_auditevent WHERE chain_hash IS NOT NULL"
            " ORDER BY sequence DESC LIMIT 1"
        )
        row = cursor.fetchone()
        prev_seq, prev_hash = (int(row[0]), str(row[1])) if row else (0, GENESIS_HASH)
        cursor.execute(
            "SELECT sequence, event_type, billing_entry_id, crc32 FROM finn_auditevent"
            " WHERE chain_hash IS NULL AND sequence > %s"
            " AND inserted_at <= clock_timestamp() - make_interval(secs => %s)"
            " ORDER BY sequence LIMIT %s",
            [prev_seq, lag_seconds, batch_size],
        )
        rows = cursor.fetchall()
        if not rows:
            return 0
        sequences, prevs, hashes = [], [], []
        for sequence, event_type, entry_id, crc in rows:
            digest = chain_hash(prev_hash, sequence, event_type, entry_id, crc)
            sequences.append(sequence)
            prevs.append(prev_seq)
            hashes.append(digest)
            prev_seq, prev_hash = sequence, digest
        cursor.execute(
            "UPDATE finn_auditevent a SET chain_prev = v.prev, chain_hash = v.hash"
            " FROM unnest(%s::bigint[], %s::bigint[], %s::varchar[]) AS v(seq, prev, hash)"
            " WHERE a.sequence = v.seq AND a.chain_hash IS NULL",
            [sequences, prevs, hashes],
        )
    return len(rows)


# --- verify -------------------------------------------------------------------


@dataclass
class VerifyReport:
    records: int = 0
    chained: int = 0
    unchained_tail: int = 0
    first_bad_sequence: int | None = None
    problem: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.first_bad_sequence is None


def _iter_audit(batch: int = 20000) -> Iterator[tuple[Any, ...]]:
    """All audit rows in sequence order, streamed with a server-side cursor."""
    with transaction.atomic(), connection.chunked_cursor() as cursor:
        cursor.execute(
            "SELECT sequence, event_type, billing_entry_id, payload::text, crc32, chain_prev, chain_hash,"
            " schema_version, correlation_id, created_at FROM finn_auditevent ORDER BY sequence"
        )
        while True:
            rows = cursor.fetchmany(batch)
            if not rows:
                return
            yield from rows


def audit_verify(*, progress: Callable[[int], None] | None = None, every: int = 100_000) -> VerifyReport:
    """Walk from genesis: every CRC32, every chain link. Stops at the first fault."""
    started = time.monotonic()
    report = VerifyReport()
    prev_seq, prev_hash = 0, GENESIS_HASH
    in_tail = False
    for sequence, event_type, entry_id, payload_text, crc, chain_prev, stored_hash, *_ in _iter_audit():
        report.records += 1
        if progress and report.records % every == 0:
            progress(report.records)
        if _crc(json.loads(payload_text)) != crc:
            report.first_bad_sequence, report.problem = sequence, "checksum mismatch (payload changed)"
            break
        if stored_hash is None:
            in_tail = True
            report.unchained_tail += 1
            continue
        if in_tail:
            report.first_bad_sequence = sequence - report.unchained_tail
            report.problem = "unchained record(s) inside the chained range"
            break
        if chain_prev != prev_seq:
            if chain_prev is not None and chain_prev > prev_seq:
                report.first_bad_sequence = prev_seq + 1 if prev_seq + 1 <= chain_prev else chain_prev
                report.problem = f"record(s) missing: sequence {sequence} links to {chain_prev}, last seen {prev_seq}"
            else:
                report.first_bad_sequence = sequence
                report.problem = f"record out of place: links to {chain_prev}, expected {prev_seq}"
            break
        if chain_hash(prev_hash, sequence, event_type, entry_id, crc) != stored_hash:
            report.first_bad_sequence, report.problem = sequence, "chain hash mismatch (record changed or moved)"
            break
        report.chained += 1
        prev_seq, prev_hash = sequence, stored_hash
    report.seconds = time.monotonic() - started
    return report


# --- export -------------------------------------------------------------------


@dataclass
class ExportReport:
    records: int = 0
    segments: list[str] = field(default_factory=list)


def segment_name(first_sequence: int) -> str:
    # Zero-padded so that lexicographic order is sequence order.
    return f"{SEGMENT_PREFIX}{first_sequence:020d}.jsonl"


def audit_export(*, directory: Path, after: int = 0, segment_max_bytes: int = SEGMENT_MAX_BYTES) -> ExportReport:
    """Write every record with sequence > ``after`` as one envelope per line."""
    directory.mkdir(parents=True, exist_ok=True)
    report = ExportReport()
    handle = None
    written = 0
    try:
        for (
            sequence,
            event_type,
            entry_id,
            payload_text,
            crc,
            _,
            _,
            version,
            correlation_id,
            created_at,
        ) in _iter_audit():
            if sequence <= after:
                continue
            envelope = {
                "schema_version": version,
                "event_type": event_type,
                "timestamp": int(created_at.timestamp() * 1000),
                "billing_entry_id": entry_id,
                "correlation_id": correlation_id,
                "checksum": crc,
                "wal_sequence": sequence,
                "payload": json.loads(payload_text),
            }
            line = (json.dumps(envelope, separators=(",", ":"), ensure_ascii=False) + "\n").encode("utf-8")
            if handle is None or written + len(line) > segment_max_bytes:
                if handle is not None:
                    handle.close()
                name = segment_name(sequence)
                handle = (directory / name).open("wb")
                report.segments.append(name)
                written = 0
            handle.write(line)
            written += len(line)
            report.records += 1
    finally:
        if handle is not None:
            handle.close()
    return report


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
    elif event in ("billing_reconciliation", "billing_balance_repair"):
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
            if _crc(envelope.get("payload")) != envelope.get("checksum"):
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
