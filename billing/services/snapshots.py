"""What the finance dashboard reads besides the ledger: five-minute snapshots of open holds
(its 24-hour chart) and the result of each ledger check."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import connection, transaction

from finn.audit import audit_append

SNAPSHOT_EVERY = timedelta(minutes=5)
SNAPSHOT_KEEP = timedelta(days=35)


def ledger_snapshot_record(*, now: datetime) -> bool:
    """Record this five-minute bucket's open holds once (a concurrent or repeated run inserts nothing).

    One statement over the open holds (the (state, expires_at) index), and a trim of rows past
    SNAPSHOT_KEEP (the ``at`` unique index). True when this call wrote the bucket's row.
    """
    step = int(SNAPSHOT_EVERY.total_seconds())
    bucket = datetime.fromtimestamp(int(now.timestamp()) // step * step, tz=now.tzinfo)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO billing_ledgersnapshot (at, open_holds, held)"
            " SELECT %s, count(*), COALESCE(sum(estimated_cost), 0) FROM billing_billingentry"
            " WHERE state = 'RESERVE_HELD' ON CONFLICT (at) DO NOTHING",
            [bucket],
        )
        written = cursor.rowcount == 1
        if written:
            cursor.execute("DELETE FROM billing_ledgersnapshot WHERE at < %s", [now - SNAPSHOT_KEEP])
    return written


def ledger_check_record(*, ok: bool, summary: str, problems: list[str], now: datetime) -> None:
    """One audit row per ledger check run (the dashboard's "last ledger check")."""
    with transaction.atomic():
        audit_append(
            event_type="billing_ledger_check",
            payload={"ok": ok, "summary": summary, "problems": problems[:20]},
            correlation_id="ledger_check",
            now=now,
            actor="ledger_check",
        )
