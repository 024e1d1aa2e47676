"""Money as money in the admin: USD with 6 decimals (USDC, CU where that is the unit), sortable,
filterable; an entry's page shows its journal, postings and audit rows; an account's page its
balance, holds and recent movements — each page in a pinned number of queries."""

from __future__ import annotations

import re

import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from billing.states import EntryState
from billing.units import format_amount
from credits.models import CreditNote, X402Payment

from .helpers import entry_in_state

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff() -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("root", password="pw"))
    return client


def test_amounts_read_as_money_exactly() -> None:
    assert format_amount(10_000) == "0.010000 USD"
    assert format_amount(1_234_567_890) == "1,234.567890 USD"
    assert format_amount(-700) == "-0.000700 USD"
    assert format_amount(2_500_000, "micro_usdc") == "2.500000 USDC"
    assert format_amount(1_250, "credit_unit") == "1,250 CU"
    assert format_amount(499, "cents") == "4.99 USD"
    assert format_amount(None) == "—"
    assert format_amount(2**63 - 1) == "9,223,372,036,854.775807 USD"  # the largest bigint, no float rounding


def test_the_entries_list_shows_usd_sorts_by_the_integer_and_filters_by_range(staff, make_account, now) -> None:
    customer = make_account(10**9)
    small = entry_in_state(EntryState.COMMITTED, account_id=customer.pk, now=now, estimate=10_000, actual=5_000)
    large = entry_in_state(EntryState.COMMITTED, account_id=customer.pk, now=now, estimate=9_000_000, actual=2_500_000)
    # when: sorted by the actual column (its index in list_display), descending
    page = staff.get("/admin/billing/billingentry/", {"o": "-5"}).content.decode()
    # then
    assert "2.500000 USD" in page
    assert "0.005000 USD" in page
    assert ">10000<" not in page  # no bare µUSD integers in the list
    assert page.index(large) < page.index(small)
    # when: filtered to actual costs from 1 to 100 USD
    filtered = staff.get("/admin/billing/billingentry/", {"actual_cost_range": "1-100"}).content.decode()
    assert large in filtered
    assert small not in filtered
    assert small in staff.get("/admin/billing/billingentry/", {"actual_cost_range": "lt-0.01"}).content.decode()


def test_an_entrys_page_shows_its_journal_postings_and_audit_rows(staff, make_account, now) -> None:
    customer = make_account(10**7)
    entry = entry_in_state(EntryState.COMMITTED, account_id=customer.pk, now=now, estimate=1_000_000, actual=600_000)
    with CaptureQueriesContext(connection) as queries:
        page = staff.get(f"/admin/billing/billingentry/{entry}/change/").content.decode()
    # then: reserve (available -1, held +1) and commit (held -1, revenue +0.6, available +0.4), read-only
    journal = page[page.index("Journal and postings") :]
    for amount in ("-1.000000 USD", "1.000000 USD", "0.600000 USD", "0.400000 USD"):
        assert amount in journal
    assert "billing_reserve" in page
    assert "billing_commit" in page
    assert "<input" not in journal.split("</fieldset>")[0]
    assert "estimate 1.000000 USD, actual 0.600000 USD" in page
    assert len(queries) <= 12, [q["sql"][:80] for q in queries.captured_queries]


def test_an_accounts_page_shows_balance_holds_and_recent_movements(staff, make_account, now) -> None:
    customer = make_account(5_000_000)
    held = entry_in_state(EntryState.RESERVE_HELD, account_id=customer.pk, now=now, estimate=1_500_000)
    entry_in_state(EntryState.COMMITTED, account_id=customer.pk, now=now, estimate=1_000_000, actual=250_000)
    for _ in range(30):  # more postings than the page shows
        entry_in_state(EntryState.RELEASED, account_id=customer.pk, now=now, estimate=10)
    with CaptureQueriesContext(connection) as queries:
        page = staff.get(f"/admin/billing/account/{customer.pk}/change/").content.decode()
    # then
    balance = page[page.index("Balance") :]
    assert "3.250000 USD" in balance  # available: 5 - 1.5 held - 0.25 spent
    assert "1.500000 USD" in balance  # held
    holds = page[page.index("Holds (soonest to expire)") :]
    assert held in holds
    movements = page[page.index("Latest 20 postings") :]
    assert len(re.findall(r"billing_(reserve|release|commit|credit_mint)", movements)) == 20
    assert len(queries) <= 12, "\n".join(q["sql"][:150] for q in queries.captured_queries)


def test_x402_and_credit_note_amounts_read_as_usdc(staff) -> None:
    note_admin, payment_admin = admin.site.get_model_admin(CreditNote), admin.site.get_model_admin(X402Payment)
    assert note_admin.remaining_money(CreditNote(amount=3_000_000, remaining=2_500_000)) == (
        '<span class="money">2.500000 USDC</span>'
    )
    assert "0.010000 USDC" in payment_admin.amount_money(X402Payment(amount=10_000))
    for path in ("/admin/credits/x402payment/", "/admin/credits/creditnote/", "/admin/credits/x402quote/"):
        assert staff.get(path, {"amount_range": "1-100"} if "payment" in path else {}).status_code == 200
