"""Statements and point-in-time balances, from postings, cross-checked against rebuild_balances."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.db.models import Sum
from django.test import Client
from django.utils import timezone

from billing.models import Posting
from billing.services import account_credit_mint, entry_void
from billing.statements import Statement, balance_at, statement_stream
from billing.states import EntryState
from billing.wal import rebuild_balances

from .helpers import entry_in_state

pytestmark = pytest.mark.django_db


def _api(key: str) -> Client:
    return Client(headers={"Authorization": f"Bearer {key}"})


def _iso(moment) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _posted(account_id: int, bucket: str, until) -> int:
    """An independent sum: the account's µUSD postings whose journal is at or before ``until``."""
    rows = Posting.objects.filter(
        account_id=account_id, bucket=bucket, denomination="micro_usd", journal_entry__created_at__lte=until
    )
    return int(rows.aggregate(total=Sum("delta"))["total"] or 0)


@pytest.fixture
def history(make_account):
    """Movements over three days: day 1 commit, day 2 hold + release + commit + void, day 3 an open hold."""
    funded = make_account(0)
    account_id = funded.account.pk
    day1 = timezone.now() - timedelta(days=2)
    account_credit_mint(
        account_id=account_id, amount=10_000_000, idempotency_key=f"st:{account_id}", correlation_id="t",
        now=day1 - timedelta(hours=2),
    )  # fmt: skip
    day2, day3 = day1 + timedelta(days=1), day1 + timedelta(days=2)
    entry_in_state(EntryState.COMMITTED, account_id=account_id, now=day1, estimate=2_000_000, actual=1_500_000)
    entry_in_state(EntryState.RELEASED, account_id=account_id, now=day2, estimate=300_000)
    voided = entry_in_state(EntryState.COMMITTED, account_id=account_id, now=day2, estimate=900_000, actual=800_000)
    entry_void(entry_id=voided, reason="dispute", actor="fin", now=day2 + timedelta(minutes=1))
    entry_in_state(EntryState.RESERVE_HELD, account_id=account_id, now=day3, estimate=400_000)
    return funded, (day1, day2, day3)


def test_point_in_time_balances_match_the_postings_and_now_matches_the_rebuild(history, now) -> None:
    funded, (day1, day2, day3) = history
    account_id = funded.account.pk
    for moment in (day1 - timedelta(seconds=1), day1, day2 + timedelta(seconds=30), day3, timezone.now()):
        past = balance_at(account_id=account_id, at=moment)
        assert (past.available, past.held) == (
            _posted(account_id, "available", moment),
            _posted(account_id, "held", moment),
        ), moment
    # now: the live row, which rebuild_balances finds equal to its postings
    assert rebuild_balances(now=now).differences == []
    funded.account.refresh_from_db()
    current = balance_at(account_id=account_id, at=timezone.now())
    assert (current.available, current.held) == (funded.account.available, funded.account.held)
    assert (current.available, current.held) == (10_000_000 - 1_500_000 - 400_000, 400_000)
    # and over the API, for the owner
    answer = _api(funded.key).get(f"/api/v1/accounts/{account_id}/balance", {"at": _iso(day2 - timedelta(hours=1))})
    assert answer.status_code == 200
    assert answer.json()["balance"] == {"account_id": account_id, "available": 8_500_000, "held": 0}


def test_a_json_statement_adds_up_line_by_line(history) -> None:
    funded, (_day1, day2, day3) = history
    account_id = funded.account.pk
    start, end = day2 - timedelta(hours=1), day3 - timedelta(hours=1)
    response = _api(funded.key).get(f"/api/v1/accounts/{account_id}/statement", {"from": _iso(start), "to": _iso(end)})
    assert response.status_code == 200
    assert response.streaming
    body = json.loads(b"".join(response.streaming_content))
    # opening = balance just before from; closing = balance at the end; lines in between
    opening = balance_at(account_id=account_id, at=start - timedelta(microseconds=1))
    closing = balance_at(account_id=account_id, at=end - timedelta(microseconds=1))
    assert body["opening"] == {"available": opening.available, "held": opening.held}
    assert body["closing"] == {"available": closing.available, "held": closing.held}
    available, held = opening.available, opening.held
    for line in body["lines"]:
        available += line["amount"] if line["bucket"] == "available" else 0
        held += line["amount"] if line["bucket"] == "held" else 0
        assert line["balance"] == {"available": available, "held": held}
    assert (available, held) == (closing.available, closing.held)
    events = [line["event"] for line in body["lines"]]
    assert events.count("billing_reserve") == 4  # two reserves, two postings each
    assert "billing_void" in events
    assert body["count"] == len(body["lines"])
    assert closing.available == 10_000_000 - 1_500_000  # the day-2 charge was voided


def test_a_csv_statement_opens_as_a_table_and_agrees_with_the_json(history) -> None:
    funded, (day1, _day2, _day3) = history
    account_id = funded.account.pk
    params = {"from": _iso(day1 - timedelta(hours=1)), "format": "csv"}
    response = _api(funded.key).get(f"/api/v1/accounts/{account_id}/statement", params)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0]["line"] == "opening"
    assert rows[-1]["line"] == "closing"
    assert rows[0]["available_usd"] == "10.000000"  # the mint, two hours before day 1, is before from
    lines = rows[1:-1]
    moved = sum(int(row["amount_micro_usd"]) for row in lines if row["bucket"] == "available")
    assert Decimal(moved) / 1_000_000 == Decimal(rows[-1]["available_usd"]) - Decimal(rows[0]["available_usd"])
    assert rows[-1]["available_usd"] == "8.100000"
    assert rows[-1]["held_usd"] == "0.400000"


def test_a_long_statement_streams_in_pages_from_one_snapshot(history) -> None:
    funded, (day1, _day2, _day3) = history
    account_id = funded.account.pk
    everything = list(statement_stream(Statement(account_id, day1 - timedelta(days=1), timezone.now(), page=1000)))
    paged = list(statement_stream(Statement(account_id, day1 - timedelta(days=1), timezone.now(), page=3)))
    assert paged == everything
    assert len(paged) == 2 + len(Posting.objects.filter(account_id=account_id))


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({}, 400, "invalid_request"),
        ({"from": "yesterday"}, 400, "invalid_request"),
        ({"from": "2026-12-01T00:00:00"}, 400, "invalid_request"),  # no offset: ambiguous
        ({"from": "2026-12-02T00:00:00Z", "to": "2026-12-01T00:00:00Z"}, 400, "invalid_request"),
        ({"from": "2020-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, 400, "invalid_request"),
        ({"from": "2026-12-01T00:00:00Z", "format": "xml"}, 400, "invalid_request"),
        ({"from": "9" * 5000}, 400, "invalid_request"),
    ],
)
def test_bad_statement_requests_get_a_clear_400(make_account, params, status, code) -> None:
    funded = make_account(1_000)
    response = _api(funded.key).get(f"/api/v1/accounts/{funded.account.pk}/statement", params)
    assert response.status_code == status
    assert response.json()["code"] == code


def test_another_accounts_statement_and_balance_do_not_exist_for_the_caller(make_account) -> None:
    mine, theirs = make_account(1_000), make_account(2_000)
    client = _api(mine.key)
    other = theirs.account.pk
    assert client.get(f"/api/v1/accounts/{other}/statement", {"from": "2026-01-01T00:00:00Z"}).status_code == 404
    assert client.get(f"/api/v1/accounts/{other}/balance", {"at": "2026-01-01T00:00:00Z"}).status_code == 404
    assert client.get(f"/api/v1/accounts/{mine.account.pk}/balance", {"at": "soon"}).status_code == 400


def test_staff_download_the_same_statement_from_the_admin(history) -> None:
    funded, (day1, _day2, day3) = history
    account_id = funded.account.pk
    staff = Client()
    staff.force_login(User.objects.create_superuser("root", password="pw"))
    page = staff.get(f"/admin/billing/account/{account_id}/change/").content.decode()
    assert 'class="statement-link"' in page
    first, last = day1.date(), day3.date()
    response = staff.get(f"/admin/billing/account/{account_id}/statement/", {"from": first, "to": last})
    assert response.status_code == 200
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[-1]["available_usd"] == "8.100000"
    assert rows[-1]["held_usd"] == "0.400000"
    assert staff.get(f"/admin/billing/account/{account_id}/statement/", {"from": "x"}).status_code == 400
    viewer = Client()
    viewer.force_login(User.objects.create_user("nobody", password="pw", is_staff=True))
    assert viewer.get(f"/admin/billing/account/{account_id}/statement/", {"from": first, "to": last}).status_code == 403
