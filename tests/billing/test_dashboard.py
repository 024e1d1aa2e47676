"""The finance dashboard: the figures agree with the ledger, each query is bounded and their
number pinned, the page is cached (≤ 60 s) and still answers without Redis, staff only."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext

from billing.dashboard import revenue_per_day
from billing.models import LedgerSnapshot
from billing.services import entry_void, ledger_check_record, ledger_snapshot_record
from billing.states import EntryState
from finn.dashboard import dashboard

from .helpers import entry_in_state

pytestmark = pytest.mark.django_db
DASHBOARD = "/admin/dashboard/"
# holds+finalize, available, revenue, snapshots, reconciliation, ledger check, webhooks — and the
# revenue account's id, cached once its row is committed (never, inside a test's transaction)
PINNED_BUILD_QUERIES = 8


@pytest.fixture
def staff() -> Client:
    client = Client()
    client.force_login(User.objects.create_user("fin", password="pw", is_staff=True))
    return client


def _tiles() -> dict[str, str]:
    return {tile.label: tile.value for panel in dashboard(refresh=True).panels for tile in panel.tiles}


def test_the_figures_agree_with_the_ledger(make_account, now) -> None:
    # given: two holds, two commits (one voided), a commit yesterday
    customer = make_account(50_000_000)
    entry_in_state(EntryState.RESERVE_HELD, account_id=customer.pk, now=now, estimate=1_500_000)
    entry_in_state(EntryState.RESERVE_HELD, account_id=customer.pk, now=now, estimate=500_000)
    entry_in_state(EntryState.COMMITTED, account_id=customer.pk, now=now, estimate=3_000_000, actual=2_000_000)
    voided = entry_in_state(EntryState.COMMITTED, account_id=customer.pk, now=now, estimate=1_000_000, actual=700_000)
    entry_void(entry_id=voided, reason="test", actor="t", now=now)
    entry_in_state(
        EntryState.COMMITTED, account_id=customer.pk, now=now - timedelta(days=1), estimate=250_000, actual=250_000
    )
    entry_in_state(EntryState.FINALIZE_FAILED, account_id=customer.pk, now=now, estimate=100_000, actual=100_000)
    ledger_check_record(ok=True, summary="ok", problems=[], now=now)
    # when
    tiles = _tiles()
    # then
    assert tiles["Held now"] == "2.000000 USD"
    assert tiles["Open holds"] == "2"
    assert tiles["Revenue today (UTC)"] == "2.100000 USD"  # 2.0 + 0.1 (the voided 0.7 netted out)
    assert tiles["Revenue 7 days"] == "2.350000 USD"
    assert tiles["Finalize failed (dead letters)"] == "1"
    customer.account.refresh_from_db()
    assert tiles["Available (all accounts)"] == f"{customer.account.available / 1_000_000:,.6f} USD"
    assert tiles["Last ledger check"].startswith("OK")
    days = revenue_per_day(now=now)
    assert len(days) == 30
    assert days[-1] == (now.date(), 2_100_000)
    assert days[-2][1] == 250_000


def test_snapshots_once_per_five_minutes_even_when_run_twice(make_account, now) -> None:
    customer = make_account(10_000_000)
    entry_in_state(EntryState.RESERVE_HELD, account_id=customer.pk, now=now, estimate=1_000_000)
    assert ledger_snapshot_record(now=now) is True
    assert ledger_snapshot_record(now=now) is False  # the same bucket: nothing written
    assert ledger_snapshot_record(now=now - timedelta(days=40)) is True
    ledger_snapshot_record(now=now + timedelta(minutes=5))  # trims rows past 35 days
    assert list(LedgerSnapshot.objects.order_by("at").values_list("open_holds", "held")) == [
        (1, 1_000_000),
        (1, 1_000_000),
    ]


def test_the_page_is_cached_its_queries_pinned_and_bounded(staff, make_account, now) -> None:
    counts = []
    customer = make_account(10**9)
    for batch in (2, 40):
        for _ in range(batch):
            entry_in_state(EntryState.RESERVE_HELD, account_id=customer.pk, now=now, estimate=10)
            entry_in_state(EntryState.COMMITTED, account_id=customer.pk, now=now, estimate=10, actual=5)
        with CaptureQueriesContext(connection) as queries:
            dashboard(refresh=True)
        counts.append(len(queries))
    assert counts == [PINNED_BUILD_QUERIES, PINNED_BUILD_QUERIES], counts
    # the page: built once, then served from the cache without a ledger query
    first = staff.get(DASHBOARD)
    assert first.status_code == 200
    with CaptureQueriesContext(connection) as queries:
        second = staff.get(DASHBOARD)
    assert b"cached up to 30 s" in second.content
    ledger_reads = [q["sql"] for q in queries.captured_queries if "billing_" in q["sql"] or "webhooks_" in q["sql"]]
    assert ledger_reads == []


# The index each ledger table is read through (billing/dashboard.py's list).
EXPECTED_INDEXES = {
    "billing_billingentry": "billing_entry_state_exp_idx",
    "billing_journalentry": "billing_journal_created_brin",
    "billing_ledgersnapshot": "billing_ledgersnapshot_at_key",
    "finn_auditevent": "finn_audit_account_idx",
    "webhooks_webhookevent": "webhooks_event_due_idx",
}


def test_every_dashboard_query_reads_its_table_through_its_index(make_account, now) -> None:
    customer = make_account(10**9)
    entry_in_state(EntryState.COMMITTED, account_id=customer.pk, now=now, actual=5)
    with CaptureQueriesContext(connection) as queries:
        dashboard(refresh=True)
    selects = [q["sql"] for q in queries.captured_queries if q["sql"].lstrip().upper().startswith(("SELECT", "WITH"))]
    with connection.cursor() as cursor:
        cursor.execute("SET enable_seqscan = off")  # what the planner does once the tables are large
        plans = []
        for sql in selects:
            cursor.execute("EXPLAIN " + sql)
            plans.append("\n".join(row[0] for row in cursor.fetchall()))
        cursor.execute("RESET enable_seqscan")
    everything = "\n".join(plans)
    for table, index in EXPECTED_INDEXES.items():
        assert f"Seq Scan on {table}" not in everything, table
        assert index in everything, (table, index, everything)


def test_the_page_answers_without_redis_and_only_for_staff(make_account, caplog) -> None:
    anonymous = Client().get(DASHBOARD)
    assert anonymous.status_code == 302  # to the admin login
    customer = Client()
    customer.force_login(User.objects.create_user("cust", password="pw"))
    assert customer.get(DASHBOARD).status_code == 302
    staff = Client()
    staff.force_login(User.objects.create_user("fin2", password="pw", is_staff=True))
    dead = {"default": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": "redis://127.0.0.1:1/0",
                        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.2, "SOCKET_TIMEOUT": 0.2}}}  # fmt: skip
    with override_settings(CACHES=dead), caplog.at_level(logging.WARNING, logger="finn.dashboard"):
        response = staff.get(DASHBOARD)
    assert response.status_code == 200
    assert "dashboard: cache unreadable" in caplog.messages
    assert b"Held now" in response.content
