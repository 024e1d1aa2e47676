"""The finance dashboard's billing panels (registered with finn.dashboard in BillingConfig.ready).

Every query is bounded and goes through an index:

- open holds and the finalize queue: the entries' ``(state, expires_at)`` index — as many rows as
  entries are open, pending or poison;
- revenue per day for 30 days: the journal's BRIN index on ``created_at`` (the last 30 days'
  journal pages), joined to the revenue account's postings by the ``journal_entry_id`` index;
- holds over 24 h: ``billing_ledgersnapshot`` by its unique ``at`` index (288 rows);
- last reconciliation and last ledger check: the audit log's ``(account_id, sequence)`` index,
  newest first;
- available total: one pass over the account rows (not the postings), the one read that grows
  with the number of accounts.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from django.db import connection
from django.urls import reverse

from billing.models import LedgerSnapshot
from billing.selectors import OpenEntries, last_system_audit, open_entries
from billing.services import SYSTEM_REVENUE, system_account_id
from billing.units import format_amount
from finn.dashboard import Panel, Tile, panel_register
from finn.svg_charts import bar_chart, line_chart

REVENUE_DAYS = 30


def available_total() -> int:
    """Σ available over user and agent accounts: one pass over the account rows (not postings)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT COALESCE(sum(available), 0) FROM billing_account WHERE kind <> 'system'")
        return int(cursor.fetchone()[0])


def revenue_per_day(*, now: datetime, days: int = REVENUE_DAYS) -> list[tuple[date, int]]:
    """Net revenue (commits and x402 payments, less voids) per UTC day, oldest first, every day present."""
    today = now.astimezone(UTC).date()
    first = today - timedelta(days=days - 1)
    start = datetime(first.year, first.month, first.day, tzinfo=UTC)
    with connection.cursor() as cursor:
        # Driven by the window (the journal's BRIN index), not by the revenue account's postings,
        # which would read every commit ever made: MATERIALIZED keeps the planner from turning it.
        cursor.execute(
            "WITH j AS MATERIALIZED (SELECT id, created_at FROM billing_journalentry WHERE created_at >= %s)"
            " SELECT (j.created_at AT TIME ZONE 'UTC')::date, sum(p.delta)"
            " FROM j JOIN billing_posting p ON p.journal_entry_id = j.id"
            " WHERE p.account_id = %s AND p.denomination = 'micro_usd'"
            " GROUP BY 1",
            [start, system_account_id(SYSTEM_REVENUE)],
        )
        found = {day: int(total) for day, total in cursor.fetchall()}
    return [(first + timedelta(days=i), found.get(first + timedelta(days=i), 0)) for i in range(days)]


def holds_last_day(*, now: datetime) -> list[LedgerSnapshot]:
    return list(LedgerSnapshot.objects.filter(at__gte=now - timedelta(hours=24)).order_by("at"))


def _age(now: datetime, then: datetime | None) -> str:
    if then is None:
        return "—"
    seconds = int((now - then).total_seconds())
    return (
        f"{seconds // 3600} h {seconds % 3600 // 60} min"
        if seconds >= 3600
        else f"{seconds // 60} min {seconds % 60} s"
    )


def billing_panels(now: datetime) -> list[Panel]:
    figures = open_entries()
    return [money_panel(now, figures), pipeline_panel(now, figures)]


def money_panel(now: datetime, figures: OpenEntries) -> Panel:
    days = revenue_per_day(now=now)
    revenue_today, revenue_7, revenue_30 = days[-1][1], sum(v for _, v in days[-7:]), sum(v for _, v in days)
    snapshots = holds_last_day(now=now)
    entries = reverse("admin:billing_billingentry_changelist")
    tiles = [
        Tile("Held now", format_amount(figures.held), href=f"{entries}?state__exact=RESERVE_HELD"),
        Tile("Open holds", f"{figures.holds:,}"),
        Tile("Oldest open hold", _age(now, figures.oldest_hold)),
        Tile("Available (all accounts)", format_amount(available_total())),
        Tile("Revenue today (UTC)", format_amount(revenue_today)),
        Tile("Revenue 7 days", format_amount(revenue_7)),
        Tile("Revenue 30 days", format_amount(revenue_30)),
    ]
    charts = [
        bar_chart(
            "Revenue per day, last 30 days (UTC)",
            [(f"{day:%Y-%m-%d}", value) for day, value in days],
            value_label=format_amount,
            caption=f"{days[0][0]:%b %d} to {days[-1][0]:%b %d}: {format_amount(revenue_30)}",
        ),
        line_chart(
            "Open holds, last 24 hours (every 5 minutes)",
            [(f"{s.at:%H:%M} UTC", s.open_holds) for s in snapshots],
            value_label=lambda n: f"{n:,} holds",
            caption=f"{len(snapshots)} snapshots; peak {max([s.open_holds for s in snapshots] + [0]):,} holds",
        ),
    ]
    return Panel("Money", tiles, charts)


def pipeline_panel(now: datetime, figures: OpenEntries) -> Panel:
    reconciliation, check = last_system_audit("billing_reconciliation"), last_system_audit("billing_ledger_check")
    letters = reverse("admin:billing_finalizedeadletter_changelist")
    tiles = [
        Tile("Finalize pending", f"{figures.finalize_pending:,}"),
        Tile("Finalize failed (dead letters)", f"{figures.finalize_failed:,}", figures.finalize_failed > 0, letters),
    ]
    if reconciliation is None:
        tiles.append(Tile("Last reconciliation", "never run", alert=True))
    else:
        payload = reconciliation.payload
        drift = int(payload.get("total_rounding_drift") or 0)
        tiles.append(
            Tile("Drift at last reconciliation", format_amount(drift), bool(payload.get("drift_threshold_exceeded")))
        )
        tiles.append(
            Tile(
                "Last reconciliation",
                f"{_age(now, reconciliation.created_at)} ago: {payload.get('divergences_found', 0)} divergent",
                alert=bool(payload.get("divergences_found")),
            )
        )
    if check is None:
        tiles.append(Tile("Last ledger check", "never run", alert=True))
    else:
        ok = bool(check.payload.get("ok"))
        tiles.append(
            Tile("Last ledger check", f"{'OK' if ok else 'FAILED'}, {_age(now, check.created_at)} ago", not ok)
        )
    return Panel("Pipelines", tiles)


def register() -> None:
    panel_register("billing", order=10, build=billing_panels)
