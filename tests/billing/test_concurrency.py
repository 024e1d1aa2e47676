"""Races against real PostgreSQL: threads, each with its own connection.

Each test proves that the losers of a race change nothing: balances, postings
and audit rows show exactly the winners' effects.
"""

from __future__ import annotations

import pytest
from django.utils import timezone

from billing import services
from billing.errors import InsufficientFunds, InvalidTransition
from billing.models import Account, BillingEntry, JournalEntry, Posting
from billing.states import EntryState
from finn.models import AuditEvent
from tests.conftest import post_json, run_threads

from .helpers import entry_in_state


@pytest.mark.django_db(transaction=True)
def test_64_reserves_on_an_account_that_covers_10(make_account) -> None:
    # given
    funded = make_account(10_000)

    def reserve(_: int) -> object:
        return services.entry_reserve(
            account_id=funded.pk, estimated_cost=1_000, correlation_id="race", now=timezone.now()
        )

    # when
    results = run_threads(64, reserve)
    # then
    winners = [r for r in results if isinstance(r, services.EntryResult)]
    losers = [r for r in results if isinstance(r, InsufficientFunds)]
    assert (len(winners), len(losers)) == (10, 54), [r for r in results if isinstance(r, BaseException)][:3]
    assert min(r.balance.available for r in winners) == 0
    assert all(r.balance.available >= 0 for r in winners)
    account = Account.objects.get(pk=funded.pk)
    assert (account.available, account.held) == (0, 10_000)
    assert BillingEntry.objects.filter(account_id=funded.pk).count() == 10
    assert JournalEntry.objects.filter(event_type="billing_reserve").count() == 10
    assert AuditEvent.objects.filter(event_type="billing_reserve").count() == 10


@pytest.mark.django_db(transaction=True)
def test_32_racing_commits_and_releases_of_one_entry_have_one_effect(make_account) -> None:
    # given
    funded = make_account(10_000)
    entry_id = entry_in_state(EntryState.RESERVE_HELD, account_id=funded.pk, now=timezone.now(), estimate=4_000)
    postings_before = Posting.objects.count()
    audits_before = AuditEvent.objects.count()

    def act(index: int) -> object:
        now = timezone.now()
        if index % 2:
            return services.entry_commit(entry_id=entry_id, actual_cost=3_000, now=now)
        return services.entry_release(entry_id=entry_id, reason="user_cancel", now=now)

    # when
    results = run_threads(32, act)
    # then
    winners = [r for r in results if isinstance(r, services.EntryResult)]
    losers = [r for r in results if isinstance(r, InvalidTransition)]
    assert (len(winners), len(losers)) == (1, 31), [r for r in results if isinstance(r, BaseException)][:3]
    entry = BillingEntry.objects.get(pk=entry_id)
    account = Account.objects.get(pk=funded.pk)
    assert AuditEvent.objects.count() == audits_before + 1
    if entry.state == EntryState.COMMITTED:
        assert (account.available, account.held) == (7_000, 0)
        assert Posting.objects.count() == postings_before + 3
    else:
        assert entry.state == EntryState.RELEASED
        assert (account.available, account.held) == (10_000, 0)
        assert Posting.objects.count() == postings_before + 2


@pytest.mark.django_db(transaction=True)
def test_32_racing_voids_and_finalizes_of_one_committed_entry_have_one_effect(make_account) -> None:
    # given
    funded = make_account(10_000)
    entry_id = entry_in_state(
        EntryState.COMMITTED, account_id=funded.pk, now=timezone.now(), estimate=4_000, actual=3_000
    )
    postings_before = Posting.objects.count()
    audits_before = AuditEvent.objects.count()

    def act(index: int) -> object:
        now = timezone.now()
        if index % 3 == 0:
            return services.entry_void(entry_id=entry_id, reason="race", actor="finance", now=now)
        if index % 3 == 1:
            return services.entry_finalize_request(entry_id=entry_id, now=now)
        return services.entry_commit(entry_id=entry_id, actual_cost=1, now=now)

    # when
    results = run_threads(32, act)
    # then
    winners = [r for r in results if isinstance(r, services.EntryResult)]
    losers = [r for r in results if isinstance(r, InvalidTransition)]
    assert (len(winners), len(losers)) == (1, 31), [r for r in results if isinstance(r, BaseException)][:3]
    entry = BillingEntry.objects.get(pk=entry_id)
    account = Account.objects.get(pk=funded.pk)
    assert AuditEvent.objects.count() == audits_before + 1
    if entry.state == EntryState.VOIDED:
        assert account.available == 10_000
        assert Posting.objects.count() == postings_before + 2
    else:
        assert entry.state == EntryState.FINALIZE_PENDING
        assert account.available == 7_000
        assert Posting.objects.count() == postings_before


@pytest.mark.django_db(transaction=True)
def test_one_idempotency_key_from_20_threads_reserves_once(make_account) -> None:
    # given
    funded = make_account(100_000)

    def reserve(_: int) -> object:
        response = post_json(
            funded.client(), "/api/v1/billing/entries", {"estimated_cost": 2_500}, **{"Idempotency-Key": "same-key"}
        )
        return response.status_code, response.headers.get("Idempotent-Replayed"), response.json()

    # when
    results = run_threads(20, reserve)
    # then
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors[:3]
    statuses = sorted({status for status, _, _ in results})
    assert set(statuses) <= {201, 409}, results
    first_runs = [body for status, replayed, body in results if status == 201 and replayed is None]
    assert len(first_runs) == 1
    entry_ids = {body["entry"]["id"] for status, _, body in results if status == 201}
    assert len(entry_ids) == 1
    in_progress = [body for status, _, body in results if status == 409]
    assert all(body["code"] == "request_in_progress" for body in in_progress)
    assert BillingEntry.objects.filter(account_id=funded.pk).count() == 1
    assert JournalEntry.objects.filter(event_type="billing_reserve").count() == 1
    assert Posting.objects.filter(account_id=funded.pk, journal_entry__event_type="billing_reserve").count() == 2
    account = Account.objects.get(pk=funded.pk)
    assert (account.available, account.held) == (97_500, 2_500)


@pytest.mark.django_db(transaction=True)
def test_one_idempotency_key_from_20_threads_at_the_service_reserves_once(make_account) -> None:
    # given: the business layer alone (no HTTP claim) still holds only once
    funded = make_account(100_000)

    def reserve(_: int) -> object:
        return services.entry_reserve(
            account_id=funded.pk, estimated_cost=2_500, correlation_id="c", idempotency_key="k", now=timezone.now()
        )

    # when
    results = run_threads(20, reserve)
    # then
    assert all(isinstance(r, services.EntryResult) for r in results), results[:3]
    assert len({r.entry.id for r in results}) == 1
    assert sum(1 for r in results if not r.replayed) == 1
    account = Account.objects.get(pk=funded.pk)
    assert (account.available, account.held) == (97_500, 2_500)
