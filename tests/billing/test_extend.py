"""Holds that grow with a stream: extend adds to a held reserve atomically, with the reserve's
checks; commit may charge up to the extended estimate; the race loser changes nothing."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from billing import services
from billing.errors import DailyCapExceeded, HoldExpired, InsufficientFunds, InvalidTransition
from billing.models import Account, BillingEntry, JournalEntry
from billing.selectors import ledger_check
from billing.states import EntryState
from billing.wal import rebuild_balances
from credits.services import agent_wallet_create
from finn.models import AuditEvent
from tests.conftest import run_threads

from .helpers import entry_in_state


@pytest.mark.django_db(transaction=True)
def test_32_concurrent_extends_on_one_hold_where_the_account_covers_exactly_10(make_account) -> None:
    # given: a 1,000 hold, and 10 times 500 more available
    customer = make_account(1_000 + 10 * 500)
    entry = entry_in_state(EntryState.RESERVE_HELD, account_id=customer.account.pk, now=timezone.now(), estimate=1_000)

    def extend(_: int) -> object:
        return services.entry_extend(entry_id=entry, additional_cost=500, now=timezone.now())

    # when
    results = run_threads(32, extend)
    # then: exactly 10 won; the 22 losers are insufficient_funds and changed nothing
    won = [r for r in results if not isinstance(r, Exception)]
    lost = [r for r in results if isinstance(r, Exception)]
    assert len(won) == 10
    assert all(isinstance(r, InsufficientFunds) for r in lost), {type(r) for r in lost}
    held = BillingEntry.objects.get(pk=entry)
    assert held.estimated_cost == 1_000 + 10 * 500
    account = Account.objects.get(pk=customer.account.pk)
    assert (account.available, account.held) == (0, 6_000)
    assert JournalEntry.objects.filter(billing_entry_id=entry, event_type="billing_reserve_extend").count() == 10
    assert AuditEvent.objects.filter(billing_entry_id=entry, event_type="billing_reserve_extend").count() == 10
    assert ledger_check().ok
    assert rebuild_balances(now=timezone.now()).differences == []
    # and the commit may charge the extended estimate, not more
    committed = services.entry_commit(entry_id=entry, actual_cost=6_000, now=timezone.now())
    assert committed.entry.actual_cost == 6_000


@pytest.mark.django_db
def test_extend_pushes_the_expiry_within_the_maximum_never_earlier(make_account, now, settings) -> None:
    customer = make_account(10_000)
    entry = entry_in_state(EntryState.RESERVE_HELD, account_id=customer.account.pk, now=now, estimate=100)
    held = BillingEntry.objects.get(pk=entry)
    result = services.entry_extend(entry_id=entry, additional_cost=1, now=now, ttl_seconds=1)
    assert result.entry.expires_at == held.expires_at  # never earlier
    longest = settings.BILLING_RESERVE_TTL_MAX_SECONDS
    result = services.entry_extend(entry_id=entry, additional_cost=1, now=now, ttl_seconds=longest)
    assert result.entry.expires_at == held.created_at + timedelta(seconds=longest)


@pytest.mark.django_db
def test_only_a_live_hold_grows(make_account, now) -> None:
    customer = make_account(10_000)
    committed = entry_in_state(EntryState.COMMITTED, account_id=customer.account.pk, now=now, estimate=100, actual=50)
    with pytest.raises(InvalidTransition):
        services.entry_extend(entry_id=committed, additional_cost=10, now=now)
    stale = entry_in_state(EntryState.RESERVE_HELD, account_id=customer.account.pk, now=now - timedelta(hours=1))
    with pytest.raises(HoldExpired):
        services.entry_extend(entry_id=stale, additional_cost=10, now=now)
    before = Account.objects.get(pk=customer.account.pk)
    assert (before.available, before.held) == (10_000 - 50 - 1_000, 1_000)


@pytest.mark.django_db
def test_an_agents_daily_cap_counts_the_extension(now) -> None:
    wallet = agent_wallet_create(owner_address="0x" + "ef" * 20, token_id="9", daily_cap=1_500, now=now)
    services.account_credit_mint(
        account_id=wallet.account.pk, amount=100_000, idempotency_key="cap-x", correlation_id="t", now=now
    )
    entry = entry_in_state(EntryState.RESERVE_HELD, account_id=wallet.account.pk, now=now, estimate=1_000)
    services.entry_extend(entry_id=entry, additional_cost=500, now=now)
    with pytest.raises(DailyCapExceeded):
        services.entry_extend(entry_id=entry, additional_cost=1, now=now)
    assert BillingEntry.objects.get(pk=entry).estimated_cost == 1_500


@pytest.mark.django_db
def test_the_extend_api_is_idempotent_per_key_and_refuses_with_the_reserve_codes(make_account, now) -> None:
    customer = make_account(2_000)
    client = Client(headers={"Authorization": f"Bearer {customer.key}"})
    entry = entry_in_state(EntryState.RESERVE_HELD, account_id=customer.account.pk, now=now, estimate=1_000)
    path = f"/api/v1/billing/entries/{entry}/extend"
    first = client.post(
        path, {"additional_cost": 600}, content_type="application/json", headers={"Idempotency-Key": "x-1"}
    )
    again = client.post(
        path, {"additional_cost": 600}, content_type="application/json", headers={"Idempotency-Key": "x-1"}
    )
    assert first.status_code == again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert first.json()["entry"]["estimated_cost"] == 1_600
    refused = client.post(path, {"additional_cost": 600}, content_type="application/json")
    assert (refused.status_code, refused.json()["code"]) == (402, "insufficient_funds")
    assert client.post(path, {"additional_cost": 0}, content_type="application/json").status_code == 400
    assert client.post(path, {"additional_cost": "5"}, content_type="application/json").status_code == 400
    assert BillingEntry.objects.get(pk=entry).estimated_cost == 1_600
