"""Hold expiry: every expired RESERVE_HELD entry released, set-based, one sweeper at a time."""

from __future__ import annotations

from datetime import date, datetime

from django.conf import settings
from django.db import connection, transaction

from billing.cache import balance_cache_write_many, daily_cache_schedule
from billing.metrics import (
    hold_expiry_released_total,
)
from billing.services.outbound import OutboundEvent, outbound_events_record
from billing.states import EntryState, ReleaseReason
from finn.audit import AuditRecord, audit_append_many
from finn.locks import Job, drain_batches


@transaction.atomic(durable=True)
def holds_expire_batch(*, now: datetime, batch_size: int) -> int:
    """Release up to ``batch_size`` expired holds, oldest expiry first, in one transaction.

    Set-based so that 10,000 holds expiring in one second are released within
    seconds: one UPDATE of the entries (SKIP LOCKED, so a commit racing on
    one entry simply wins it), one UPDATE of the affected accounts (in id
    order), one statement for the journals and postings, one for the audit
    rows (``billing_reserve_expired``).
    """
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE billing_billingentry e SET state = 'RELEASED', release_reason = 'reserve_expired',"
            " updated_at = %s FROM (SELECT id FROM billing_billingentry WHERE state = 'RESERVE_HELD'"
            " AND expires_at <= %s ORDER BY expires_at LIMIT %s FOR UPDATE SKIP LOCKED) x"
            " WHERE e.id = x.id RETURNING e.id, e.account_id, e.estimated_cost, e.correlation_id, e.expires_at,"
            " e.cap_day",
            [now, now, batch_size],
        )
        fetched = cursor.fetchall()
        if not fetched:
            return 0
        capped: dict[tuple[int, date], int] = {}
        for _, account_id, amount, _, _, cap_day in fetched:
            if cap_day is not None:
                capped[(account_id, cap_day)] = capped.get((account_id, cap_day), 0) + amount
        if capped:
            keys = sorted(capped)
            cursor.execute(
                "UPDATE billing_dailyspend d SET held = d.held - v.amount"
                " FROM unnest(%s::bigint[], %s::date[], %s::bigint[]) AS v(account_id, day, amount)"
                " WHERE d.account_id = v.account_id AND d.day = v.day RETURNING d.account_id, d.day, d.spent, d.held",
                [[k[0] for k in keys], [k[1] for k in keys], [capped[k] for k in keys]],
            )
            for account_id, day, spent, held in cursor.fetchall():
                daily_cache_schedule(
                    account_id=account_id,
                    day=day,
                    spent_delta=0,
                    held_delta=-capped[(account_id, day)],
                    spent=int(spent),
                    held=int(held),
                )
        rows = [row[:5] for row in fetched]
        totals: dict[int, int] = {}
        for _, account_id, amount, _, _ in rows:
            totals[account_id] = totals.get(account_id, 0) + amount
        account_ids = sorted(totals)
        cursor.execute("SELECT id FROM billing_account WHERE id = ANY(%s) ORDER BY id FOR UPDATE", [account_ids])
        cursor.execute(
            "UPDATE billing_account a SET available = a.available + t.total, held = a.held - t.total,"
            " version = a.version + 1 FROM unnest(%s::bigint[], %s::bigint[]) AS t(id, total)"
            " WHERE a.id = t.id RETURNING a.id, a.available, a.held, a.version",
            [account_ids, [totals[a] for a in account_ids]],
        )
        balances = [(int(r[0]), int(r[1]), int(r[2]), int(r[3])) for r in cursor.fetchall()]
        cursor.execute(
            "WITH v AS (SELECT * FROM unnest(%s::varchar[], %s::bigint[], %s::bigint[], %s::varchar[])"
            " AS v(entry_id, account_id, amount, correlation_id)),"
            " j AS (INSERT INTO billing_journalentry (billing_entry_id, event_type, correlation_id,"
            " rounding_direction, created_at) SELECT entry_id, 'billing_reserve_expired', correlation_id, '', %s"
            " FROM v RETURNING id, billing_entry_id)"
            " INSERT INTO billing_posting (journal_entry_id, account_id, bucket, delta, denomination)"
            " SELECT j.id, v.account_id, b.bucket, b.sign * v.amount, 'micro_usd'"
            " FROM j JOIN v ON v.entry_id = j.billing_entry_id"
            " CROSS JOIN (VALUES ('held', -1), ('available', 1)) AS b(bucket, sign)",
            [[r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows], now],
        )
    audit_append_many(
        [
            AuditRecord(
                event_type="billing_reserve_expired",
                payload={
                    "account_id": str(account_id),
                    "from_state": EntryState.RESERVE_HELD.value,
                    "to_state": EntryState.RELEASED.value,
                    "estimated_cost": str(amount),
                    "actual_cost": None,
                    "reason": ReleaseReason.RESERVE_EXPIRED.value,
                    "expires_at": expires_at.isoformat(),
                },
                correlation_id=correlation_id,
                billing_entry_id=entry_id,
                account_id=account_id,
                reason=ReleaseReason.RESERVE_EXPIRED.value,
            )
            for entry_id, account_id, amount, correlation_id, expires_at in rows
        ],
        now=now,
    )
    outbound_events_record(
        [
            OutboundEvent(account_id, "hold.expired", {"entry_id": entry_id, "amount": amount,
                                                       "correlation_id": correlation_id,
                                                       "expires_at": expires_at.isoformat()})
            for entry_id, account_id, amount, correlation_id, expires_at in rows
        ],
        now=now,
    )  # fmt: skip
    transaction.on_commit(lambda: balance_cache_write_many(balances))
    return len(rows)


def holds_expire(*, now: datetime, batch_size: int | None = None, max_batches: int = 100) -> int:
    """Release every expired hold (bounded per run), one sweeper (the job lease) at a time."""
    size = batch_size or settings.HOLD_EXPIRY_BATCH_SIZE
    released = drain_batches(
        Job.HOLD_EXPIRY_SWEEP,
        lambda: holds_expire_batch(now=now, batch_size=size),
        batch_size=size,
        max_batches=max_batches,
    )
    hold_expiry_released_total.inc(released or 0)
    return released or 0
