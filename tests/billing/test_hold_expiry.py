"""Expired holds go back to available; an expired hold can never be committed."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from billing import services
from billing.errors import HoldExpired, InvalidTransition
from billing.models import Account, BillingEntry, JournalEntry, Posting
from billing.states import EntryState
from finn.models import AuditEvent
from tests.conftest import run_threads


@pytest.mark.django_db
def test_sweeper_releases_expired_holds_with_audit(make_account, now) -> None:
    # given
    funded = make_account(10_000)
    expired = services.entry_reserve(
        account_id=funded.pk, estimated_cost=3_000, correlation_id="c", ttl_seconds=1, now=now
    )
    live = services.entry_reserve(
        account_id=funded.pk, estimated_cost=2_000, correlation_id="c", ttl_seconds=300, now=now
    )
    # when
    released = services.holds_expire(now=now + timedelta(seconds=2))
    # then
    assert released == 1
    entry = BillingEntry.objects.get(pk=expired.entry.id)
    assert (entry.state, entry.release_reason) == (EntryState.RELEASED, "reserve_expired")
    assert BillingEntry.objects.get(pk=live.entry.id).state == EntryState.RESERVE_HELD
    account = Account.objects.get(pk=funded.pk)
    assert (account.available, account.held) == (8_000, 2_000)
    journal = JournalEntry.objects.get(billing_entry_id=expired.entry.id, event_type="billing_reserve_expired")
    assert sorted(Posting.objects.filter(journal_entry=journal).values_list("bucket", "delta")) == [
        ("available", 3_000),
        ("held", -3_000),
    ]
    audit = AuditEvent.objects.get(billing_entry_id=expired.entry.id, event_type="billing_reserve_expired")
    assert audit.payload["estimated_cost"] == "3000"
    assert audit.payload["to_state"] == "RELEASED"


@pytest.mark.django_db
def test_sweeper_works_in_batches_in_expiry_order(make_account, now) -> None:
    # given
    funded = make_account(1_000_000)
    ids = [
        services.entry_reserve(
            account_id=funded.pk, estimated_cost=10, correlation_id="c", ttl_seconds=1 + i, now=now
        ).entry.id
        for i in range(7)
    ]
    # when: one batch of 3 at a time
    first = services.holds_expire_batch(now=now + timedelta(seconds=60), batch_size=3)
    # then: the three that expired first went first
    assert first == 3
    released = set(BillingEntry.objects.filter(state=EntryState.RELEASED).values_list("id", flat=True))
    assert released == set(ids[:3])
    assert services.holds_expire(now=now + timedelta(seconds=60), batch_size=3) == 4


@pytest.mark.django_db
def test_commit_after_expiry_is_refused_even_before_the_sweeper_runs(make_account, now) -> None:
    # given
    funded = make_account(10_000)
    entry_id = services.entry_reserve(
        account_id=funded.pk, estimated_cost=1_000, correlation_id="c", ttl_seconds=1, now=now
    ).entry.id
    # when / then
    with pytest.raises(HoldExpired):
        services.entry_commit(entry_id=entry_id, actual_cost=500, now=now + timedelta(seconds=1))
    assert BillingEntry.objects.get(pk=entry_id).state == EntryState.RESERVE_HELD


@pytest.mark.django_db(transaction=True)
def test_sweeper_racing_commits_releases_each_hold_once(make_account) -> None:
    # given: 20 holds expiring now, committed (too late) while the sweeper runs
    funded = make_account(100_000)
    start = timezone.now()
    ids = [
        services.entry_reserve(
            account_id=funded.pk, estimated_cost=1_000, correlation_id="c", ttl_seconds=1, now=start
        ).entry.id
        for _ in range(20)
    ]
    later = start + timedelta(seconds=2)

    def act(index: int) -> object:
        if index == 0:
            return services.holds_expire(now=later, batch_size=5)
        try:
            return services.entry_commit(entry_id=ids[index - 1], actual_cost=500, now=later)
        except (HoldExpired, InvalidTransition) as exc:  # before or after the sweeper released it
            return exc

    # when
    results = run_threads(21, act)
    # then: every commit was refused, every hold released exactly once
    assert all(isinstance(r, HoldExpired | InvalidTransition) for r in results[1:]), results[1:4]
    assert BillingEntry.objects.filter(state=EntryState.RELEASED).count() == 20
    account = Account.objects.get(pk=funded.pk)
    assert (account.available, account.held) == (100_000, 0)
    assert AuditEvent.objects.filter(event_type="billing_reserve_expired").count() == 20
