"""Reads of the billing ledger."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from django.db import connection
from django.db.models import Count, Sum

from billing.cache import daily_cache_read
from billing.errors import AccountNotFound, EntryNotFound, InvalidEntryId
from billing.models import Account, BillingEntry, DailySpend, JournalEntry, Posting
from billing.results import Balance
from billing.states import EntryState
from finn.models import AuditEvent

_ULID_ALPHABET = set("0123456789ABCDEFGHJKMNPQRSTVWXYZ")
# What ``parse_entry_id`` accepts (it also takes surrounding spaces), for the API schema.
ENTRY_ID_PATTERN = r"^[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$"


def parse_entry_id(raw: str) -> str:
    """A billing entry id: 26 Crockford base32 characters (a ULID)."""
    candidate = raw.strip().upper() if isinstance(raw, str) else ""
    if len(candidate) != 26 or not set(candidate) <= _ULID_ALPHABET or candidate[0] > "7":
        raise InvalidEntryId(f"invalid billing entry id {raw!r}: must be a ULID (26 Crockford base32 characters)")
    return candidate


def entry_get(*, entry_id: str, account_id: int | None) -> BillingEntry:
    """One entry; entries of other accounts do not exist for the caller."""
    queryset = BillingEntry.objects.filter(pk=entry_id)
    if account_id is not None:
        queryset = queryset.filter(account_id=account_id)
    entry = queryset.first()
    if entry is None:
        raise EntryNotFound(f"billing entry {entry_id} not found")
    return entry


def poison_count() -> int:
    """Entries that gave up finalizing (FINALIZE_FAILED)."""
    return BillingEntry.objects.filter(state="FINALIZE_FAILED").count()


def account_balance(*, account_id: int) -> Balance:
    row = Account.objects.filter(pk=account_id).values_list("available", "held", "version").first()
    if row is None:
        raise AccountNotFound(f"account {account_id} not found")
    return Balance(account_id=account_id, available=row[0], held=row[1], version=row[2])


@dataclass(frozen=True)
class AgentBudget:
    account_id: int
    day: date
    daily_cap: int | None
    spent_today: int
    held_today: int
    remaining: int | None
    available: int
    refill_threshold: int | None
    needs_refill: bool


def agent_budget(*, account_id: int, now: datetime, scope_account_id: int | None) -> AgentBudget:
    """Today's (UTC) cap, spend, holds and refill state of an agent account.

    Spend and holds come from the Redis daily cache, or from PostgreSQL (the
    cap's truth) on a miss or while Redis is down. Display only: the cap
    itself is always checked against PostgreSQL in the reserve transaction.
    """
    account = (
        Account.objects.filter(pk=account_id, kind="agent").values("available", "daily_cap", "refill_threshold").first()
    )
    if account is None or (scope_account_id is not None and scope_account_id != account_id):
        raise AccountNotFound(f"agent {account_id} not found")
    day = now.astimezone(UTC).date()
    cached = daily_cache_read(account_id, day)
    if cached is None:
        row = DailySpend.objects.filter(account_id=account_id, day=day).values_list("spent", "held").first()
        cached = {"spent": row[0], "held": row[1]} if row else {"spent": 0, "held": 0}
    spend = cached
    cap = account["daily_cap"]
    threshold = account["refill_threshold"]
    return AgentBudget(
        account_id=account_id,
        day=day,
        daily_cap=cap,
        spent_today=spend["spent"],
        held_today=spend["held"],
        remaining=None if cap is None else max(0, cap - spend["spent"] - spend["held"]),
        available=account["available"],
        refill_threshold=threshold,
        needs_refill=threshold is not None and account["available"] < threshold,
    )


# Balance rows that differ from the sum of their postings (µUSD): the one
# query behind ledger_check, rebuild_balances and the chaos checker.
BALANCE_DIFF_SQL = """
WITH sums AS (
    SELECT account_id,
           COALESCE(SUM(delta) FILTER (WHERE bucket = 'available'), 0) AS available,
           COALESCE(SUM(delta) FILTER (WHERE bucket = 'held'), 0) AS held
      FROM billing_posting
     WHERE denomination = 'micro_usd'
     GROUP BY account_id
)
SELECT a.id, a.available, a.held, COALESCE(s.available, 0), COALESCE(s.held, 0)
  FROM billing_account a LEFT JOIN sums s ON s.account_id = a.id
 WHERE a.kind <> 'system'
   AND (a.available <> COALESCE(s.available, 0) OR a.held <> COALESCE(s.held, 0))
 ORDER BY a.id"""


# Journals whose postings do not sum to zero in a denomination (ledger_check; the chaos checker).
UNBALANCED_JOURNALS_SQL = (
    "SELECT journal_entry_id, denomination, SUM(delta) FROM billing_posting"
    " GROUP BY journal_entry_id, denomination HAVING SUM(delta) <> 0 ORDER BY 1"
)


@dataclass
class LedgerCheckReport:
    journal_entries: int = 0
    postings: int = 0
    accounts: int = 0
    unbalanced_journals: list[tuple[int, str, int]] = field(default_factory=list)
    unbalanced_denominations: list[tuple[str, int]] = field(default_factory=list)
    balance_mismatches: list[tuple[int, str, int, int]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.unbalanced_journals or self.unbalanced_denominations or self.balance_mismatches)

    def lines(self) -> list[str]:
        out = [
            f"checked {self.journal_entries} journal entries, {self.postings} postings, {self.accounts} balance rows",
        ]
        for journal_id, denomination, total in self.unbalanced_journals:
            out.append(f"UNBALANCED journal {journal_id} in {denomination}: sum {total}")
        for denomination, total in self.unbalanced_denominations:
            out.append(f"UNBALANCED ledger in {denomination}: sum {total}")
        for account_id, bucket, stored, posted in self.balance_mismatches:
            out.append(f"MISMATCH account {account_id} {bucket}: row {stored}, postings {posted}")
        out.append("ledger OK" if self.ok else "ledger FAILED")
        return out


def ledger_check(*, limit: int = 100) -> LedgerCheckReport:
    """Every journal sums to zero per denomination; every balance row equals its postings."""
    report = LedgerCheckReport()
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM billing_journalentry")
        report.journal_entries = cursor.fetchone()[0]
        cursor.execute("SELECT count(*) FROM billing_posting")
        report.postings = cursor.fetchone()[0]
        cursor.execute("SELECT count(*) FROM billing_account WHERE kind <> 'system'")
        report.accounts = cursor.fetchone()[0]
        cursor.execute(UNBALANCED_JOURNALS_SQL + " LIMIT %s", [limit])
        report.unbalanced_journals = [(r[0], r[1], int(r[2])) for r in cursor.fetchall()]
        cursor.execute(
            "SELECT denomination, SUM(delta) FROM billing_posting GROUP BY denomination HAVING SUM(delta) <> 0"
        )
        report.unbalanced_denominations = [(r[0], int(r[1])) for r in cursor.fetchall()]
        cursor.execute(BALANCE_DIFF_SQL + " LIMIT %s", [limit])
        for account_id, available, held, posted_available, posted_held in cursor.fetchall():
            if available != posted_available:
                report.balance_mismatches.append((account_id, "available", int(available), int(posted_available)))
            if held != posted_held:
                report.balance_mismatches.append((account_id, "held", int(held), int(posted_held)))
    return report


@dataclass(frozen=True)
class AccountOverview:
    """What finance staff see on an account's page."""

    spent_today: int
    held_today: int
    open_holds: int
    open_holds_amount: int
    last_reconciliation: dict[str, Any] | None


def account_overview(*, account_id: int, now: datetime) -> AccountOverview:
    day = now.astimezone(UTC).date()
    spend: dict[str, Any] = dict(
        DailySpend.objects.filter(account_id=account_id, day=day).values("spent", "held").first() or {}
    )
    holds = BillingEntry.objects.filter(account_id=account_id, state=EntryState.RESERVE_HELD).aggregate(
        count=Count("pk"), amount=Sum("estimated_cost")
    )
    last = last_system_audit("billing_reconciliation")
    return AccountOverview(
        spent_today=int(spend.get("spent") or 0),
        held_today=int(spend.get("held") or 0),
        open_holds=int(holds["count"] or 0),
        open_holds_amount=int(holds["amount"] or 0),
        last_reconciliation={"payload": last.payload, "created_at": last.created_at} if last else None,
    )


def last_system_audit(event_type: str) -> AuditEvent | None:
    """The newest audit row of a system job (no account): reconciliation, ledger check."""
    return AuditEvent.objects.filter(account_id__isnull=True, event_type=event_type).order_by("-sequence").first()


@dataclass(frozen=True)
class OpenEntries:
    """The open part of the entries table: holds, and the finalize queue."""

    holds: int
    held: int  # µUSD, the sum of the open holds' estimates
    oldest_hold: datetime | None
    finalize_pending: int
    finalize_failed: int


def open_entries() -> OpenEntries:
    """One query through the (state, expires_at) index (as many rows as entries are open)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FILTER (WHERE state = 'RESERVE_HELD'),"
            " COALESCE(sum(estimated_cost) FILTER (WHERE state = 'RESERVE_HELD'), 0),"
            " min(created_at) FILTER (WHERE state = 'RESERVE_HELD'),"
            " count(*) FILTER (WHERE state = 'FINALIZE_PENDING'),"
            " count(*) FILTER (WHERE state = 'FINALIZE_FAILED')"
            " FROM billing_billingentry WHERE state IN ('RESERVE_HELD', 'FINALIZE_PENDING', 'FINALIZE_FAILED')"
        )
        holds, held, oldest, pending, failed = cursor.fetchone()
    return OpenEntries(int(holds), int(held), oldest, int(pending), int(failed))


ADMIN_DETAIL_ROWS = 20


def account_open_holds(*, account_id: int, limit: int = ADMIN_DETAIL_ROWS) -> list[BillingEntry]:
    """The account's open holds, soonest to expire first (through the (state, expires_at) index)."""
    held = BillingEntry.objects.filter(account_id=account_id, state=EntryState.RESERVE_HELD)
    return list(held.order_by("expires_at")[:limit])


def account_recent_postings(*, account_id: int, limit: int = ADMIN_DETAIL_ROWS) -> list[Posting]:
    """The account's latest postings, newest first (the (account, journal entry) index), with their journal."""
    postings = Posting.objects.filter(account_id=account_id).select_related("journal_entry")
    return list(postings.order_by("-journal_entry_id", "-pk")[:limit])


def entry_journals(*, entry_id: str) -> list[tuple[JournalEntry, list[Posting]]]:
    """An entry's journal entries in order, each with its postings (two queries)."""
    journals = list(JournalEntry.objects.filter(billing_entry_id=entry_id).order_by("pk"))
    by_journal: dict[int, list[Posting]] = {journal.pk: [] for journal in journals}
    for posting in Posting.objects.filter(journal_entry_id__in=by_journal).order_by("pk"):
        by_journal[posting.journal_entry_id].append(posting)
    return [(journal, by_journal[journal.pk]) for journal in journals]


def entry_audit_rows(*, entry_id: str, limit: int = 50) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(billing_entry_id=entry_id).order_by("sequence")[:limit])
