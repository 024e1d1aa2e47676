"""The audit log as a write-ahead log: hash chain, verify, export (beside the table it reads).

Chain: each record's ``chain_hash = sha256(prev_hash | sequence | event_type |
billing_entry_id | crc32)`` and ``chain_prev`` is the previous record's
sequence (genesis: sequence 0, hash of 64 zeros). Writers never take a lock
for it: a beat task links records in batches, and only records inserted more
than ``CHAIN_LAG_SECONDS`` ago, so every transaction that drew a smaller
sequence has finished (billing transactions last milliseconds). Records not
yet linked are the "unchained tail", reported by verify.

Export writes JSONL segments ``billing-wal-<first seq>.jsonl``; replaying them into
Redis and rebuilding balances from postings are billing's (``billing/wal.py``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.db import connection, transaction

from finn.audit import payload_crc32
from finn.locks import Job, drain_batches, xact_lock

logger = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64
CHAIN_LAG_SECONDS = 60
SEGMENT_MAX_BYTES = 1024**3
SEGMENT_PREFIX = "billing-wal-"


def chain_hash(prev_hash: str, sequence: int, event_type: str, billing_entry_id: str | None, crc32: str) -> str:
    material = f"{prev_hash}|{sequence}|{event_type}|{billing_entry_id or ''}|{crc32}"
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


# --- chaining -----------------------------------------------------------------


def audit_chain(*, batch_size: int = 5000, max_batches: int = 200, lag_seconds: int = CHAIN_LAG_SECONDS) -> int:
    """Link unchained records older than the lag, in sequence order; return how many."""
    linked = drain_batches(
        Job.AUDIT_CHAIN,
        lambda: _chain_batch(batch_size=batch_size, lag_seconds=lag_seconds),
        batch_size=batch_size,
        max_batches=max_batches,
    )
    return linked or 0


def chain_head() -> tuple[int, str]:
    """The newest linked record (sequence, hash); genesis (0, zeros) before any."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT sequence, chain_hash FROM finn_auditevent WHERE chain_hash IS NOT NULL"
            " ORDER BY sequence DESC LIMIT 1"
        )
        row = cursor.fetchone()
    return (int(row[0]), str(row[1])) if row else (0, GENESIS_HASH)


@transaction.atomic(durable=True)
def _chain_batch(*, batch_size: int, lag_seconds: int) -> int:
    # Serial even if the job's lease expired under a stalled holder: each batch extends the
    # chain from its current head, so two batches must never interleave.
    xact_lock("audit_chain")
    prev_seq, prev_hash = chain_head()
    with connection.cursor() as cursor:
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
        if payload_crc32(json.loads(payload_text)) != crc:
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
