"""Statements and point-in-time balances of an account, computed from its postings.

A period is ``[from, to)`` by the journal entry's ``created_at`` (finn's clock: the database's).
Everything is read in one REPEATABLE READ, READ ONLY transaction, so the opening balance, every
line and the closing balance come from one snapshot: closing = opening + Σ lines, exactly.

The opening balance is the account's posted sums now (``posted_available`` / ``posted_held``:
the sums of its µUSD postings, kept by the postings trigger, billing/0013) less the postings
since ``from``; lines are read in journal order, in keyset pages of ``PAGE`` postings through the
``(account_id, journal_entry_id)`` index, and streamed: memory stays constant for any range.
System accounts keep no posted sums; their figures are the plain sums of their postings.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db import connection, transaction
from django.db.backends.utils import CursorWrapper
from django.http import StreamingHttpResponse

from billing.errors import AccountNotFound
from billing.models import Account
from billing.units import decimal_string
from finn.errors import InvalidRequest

PAGE = 2_000


@dataclass(frozen=True)
class Balances:
    available: int
    held: int


@dataclass(frozen=True)
class StatementLine:
    at: datetime
    journal_entry_id: int
    event_type: str
    entry_id: str | None
    bucket: str
    amount: int
    available: int  # running balances after this line
    held: int


_AFTER = (
    "SELECT COALESCE(sum(p.delta) FILTER (WHERE p.bucket = 'available'), 0),"
    " COALESCE(sum(p.delta) FILTER (WHERE p.bucket = 'held'), 0)"
    " FROM billing_posting p JOIN billing_journalentry j ON j.id = p.journal_entry_id"
    " WHERE p.account_id = %s AND p.denomination = 'micro_usd' AND j.created_at {op} %s"
)
_LINES = (
    "SELECT j.created_at, j.id, j.event_type, j.billing_entry_id, p.id, p.bucket, p.delta"
    " FROM billing_posting p JOIN billing_journalentry j ON j.id = p.journal_entry_id"
    " WHERE p.account_id = %s AND p.denomination = 'micro_usd' AND j.created_at >= %s AND j.created_at < %s"
    " AND (p.journal_entry_id, p.id) > (%s, %s)"
    " ORDER BY p.journal_entry_id, p.id LIMIT %s"
)


@contextmanager
def _snapshot() -> Iterator[None]:
    """A REPEATABLE READ, READ ONLY transaction (inside a caller's transaction: that one's snapshot)."""
    outermost = not connection.in_atomic_block
    with transaction.atomic():
        if outermost:
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        yield


def _balances_at(cur: CursorWrapper, account_id: int, at: datetime, *, inclusive: bool) -> Balances:
    """Balances just before ``at`` (``inclusive=False``) or just after it (``inclusive=True``)."""
    cur.execute("SELECT kind, posted_available, posted_held FROM billing_account WHERE id = %s", [account_id])
    row = cur.fetchone()
    if row is None:
        raise AccountNotFound(f"account {account_id} not found")
    kind, available, held = row
    if kind == "system":  # no posted sums: everything up to ``at``
        cur.execute(_AFTER.format(op="<=" if inclusive else "<"), [account_id, at])
        before_available, before_held = cur.fetchone()
        return Balances(int(before_available), int(before_held))
    cur.execute(_AFTER.format(op=">" if inclusive else ">="), [account_id, at])
    later_available, later_held = cur.fetchone()
    return Balances(int(available) - int(later_available), int(held) - int(later_held))


def balance_at(*, account_id: int, at: datetime) -> Balances:
    """The account's balances at ``at`` (every posting whose journal entry is at or before it)."""
    with _snapshot(), connection.cursor() as cursor:
        return _balances_at(cursor, account_id, at, inclusive=True)


@dataclass
class Statement:
    """Opening balances, then ``lines()`` (a generator, one snapshot), then ``closing``."""

    account_id: int
    start: datetime
    end: datetime
    opening: Balances | None = None
    closing: Balances | None = None
    count: int = 0
    page: int = PAGE  # postings per keyset query


def statement_stream(statement: Statement) -> Iterator[tuple[str, StatementLine | Balances]]:
    """Yields ("opening", Balances), ("line", StatementLine) in journal order, then ("closing", Balances).

    One transaction for the whole stream (a consistent snapshot); raises AccountNotFound before
    the first item when the account does not exist.
    """
    with _snapshot():
        with connection.cursor() as cursor:
            opening = _balances_at(cursor, statement.account_id, statement.start, inclusive=False)
            statement.opening = opening
            yield "opening", opening
            available, held, last = opening.available, opening.held, (0, 0)
            while True:
                cursor.execute(_LINES, [statement.account_id, statement.start, statement.end, *last, statement.page])
                rows = cursor.fetchall()
                for at, journal_id, event_type, entry_id, _posting_id, bucket, delta in rows:
                    if bucket == "available":
                        available += delta
                    else:
                        held += delta
                    statement.count += 1
                    yield (
                        "line",
                        StatementLine(at, journal_id, event_type, entry_id, bucket, int(delta), available, held),
                    )
                if len(rows) < statement.page:
                    break
                last = (rows[-1][1], rows[-1][4])
        statement.closing = Balances(available, held)
        yield "closing", statement.closing


# --- Output formats (the API and the admin's export) -------------------------------------------

MAX_PERIOD = timedelta(days=400)
CSV_HEADER = [
    "line", "at_utc", "journal_entry_id", "event", "entry_id", "bucket", "amount_usd", "available_usd",
    "held_usd", "amount_micro_usd",
]  # fmt: skip


def parse_instant(raw: str | None, name: str, *, default: datetime | None = None) -> datetime:
    """An ISO 8601 time with its offset (``2026-12-01T00:00:00Z``); a clear 400 otherwise."""
    if raw is None or raw == "":
        if default is None:
            raise InvalidRequest(f"{name} is required (an ISO 8601 time, e.g. 2026-12-01T00:00:00Z)")
        return default
    try:
        value = datetime.fromisoformat(raw.strip()[:40].replace("z", "Z"))
    except ValueError:
        raise InvalidRequest(f"{name} must be an ISO 8601 time, e.g. 2026-12-01T00:00:00Z") from None
    if value.tzinfo is None:
        raise InvalidRequest(f"{name} needs a UTC offset (Z or +hh:mm): {raw[:40]!r} is ambiguous")
    return value.astimezone(UTC)


def period_check(start: datetime, end: datetime) -> None:
    if end <= start:
        raise InvalidRequest("to must be after from")
    if end - start > MAX_PERIOD:
        raise InvalidRequest(f"a statement covers at most {MAX_PERIOD.days} days; ask for several")


class _Echo:
    def write(self, value: str) -> str:
        return value


def statement_csv(statement: Statement) -> Iterator[str]:
    """CSV rows: the opening line, one per posting, the closing line (amounts in USD and µUSD)."""
    writer = csv.writer(_Echo())
    yield writer.writerow(CSV_HEADER)
    for kind, item in statement_stream(statement):
        if isinstance(item, Balances):
            at = statement.start if kind == "opening" else statement.end
            blank = [""] * 5
            yield writer.writerow([kind, at.isoformat(), *blank, decimal_string(item.available),
                                   decimal_string(item.held), ""])  # fmt: skip
            continue
        yield writer.writerow(
            [statement.count, item.at.isoformat(), item.journal_entry_id, item.event_type, item.entry_id or "",
             item.bucket, decimal_string(item.amount), decimal_string(item.available), decimal_string(item.held),
             item.amount]
        )  # fmt: skip


def _balances_json(balances: Balances) -> dict[str, int]:
    return {"available": balances.available, "held": balances.held}


def statement_json(statement: Statement) -> Iterator[str]:
    """The statement as one JSON document, written as it is read."""
    head = {"account_id": statement.account_id, "from": statement.start.isoformat(), "to": statement.end.isoformat(),
            "unit": "micro_usd"}  # fmt: skip
    yield json.dumps(head)[:-1]
    first = True
    for kind, item in statement_stream(statement):
        if isinstance(item, Balances):
            if kind == "opening":
                yield f', "opening": {json.dumps(_balances_json(item))}, "lines": ['
            else:
                yield f'], "closing": {json.dumps(_balances_json(item))}, "count": {statement.count}}}'
            continue
        line = {
            "at": item.at.isoformat(), "journal_entry_id": item.journal_entry_id, "event": item.event_type,
            "entry_id": item.entry_id, "bucket": item.bucket, "amount": item.amount,
            "balance": {"available": item.available, "held": item.held},
        }  # fmt: skip
        yield ("" if first else ",") + json.dumps(line)
        first = False


def statement_response(*, account_id: int, start: datetime, end: datetime, fmt: str) -> StreamingHttpResponse:
    """A streamed statement (json or csv); the account must exist (404 before the stream starts)."""
    period_check(start, end)
    if not Account.objects.filter(pk=account_id).exists():
        raise AccountNotFound(f"account {account_id} not found")
    statement = Statement(account_id=account_id, start=start, end=end)
    if fmt == "csv":
        response = StreamingHttpResponse(statement_csv(statement), content_type="text/csv; charset=utf-8")
        name = f"finn-statement-{account_id}-{start:%Y%m%d}-{end:%Y%m%d}.csv"
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        return response
    if fmt != "json":
        raise InvalidRequest("format must be json or csv")
    return StreamingHttpResponse(statement_json(statement), content_type="application/json")
