"""Each operation writes exactly the postings of its rule, with the audit row."""

from __future__ import annotations

from datetime import timedelta

import pytest

from billing import services
from billing.errors import ExceedsHold, HoldExpired, InsufficientFunds
from billing.models import JournalEntry, Posting
from billing.services import SYSTEM_REVENUE, TREASURY_USDC_RECEIVED, system_account_id
from billing.states import EntryState
from finn.models import AuditEvent

from .helpers import ledger_snapshot, with_upstream


def legs(entry_id: str, event_type: str) -> list[tuple[int, str, int]]:
    journal = JournalEntry.objects.get(billing_entry_id=entry_id, event_type=event_type)
    return sorted(Posting.objects.filter(journal_entry=journal).values_list("account_id", "bucket", "delta"))


@pytest.mark.django_db
def test_mint_posts_treasury_to_available(make_account) -> None:
    # when
    funded = make_account(10_000)
    # then
    journal = JournalEntry.objects.get(event_type="credit_mint")
    assert sorted(Posting.objects.filter(journal_entry=journal).values_list("account_id", "bucket", "delta")) == sorted(
        [(system_account_id(TREASURY_USDC_RECEIVED), "available", -10_000), (funded.pk, "available", 10_000)]
    )
    assert (funded.account.available, funded.account.held) == (10_000, 0)


@pytest.mark.django_db
def test_mint_with_the_same_idempotency_key_credits_once(make_account, now) -> None:
    # given
    funded = make_account(0)
    first = services.account_credit_mint(
        account_id=funded.pk, amount=500, idempotency_key="k1", correlation_id="c", now=now
    )
    # when
    second = services.account_credit_mint(
        account_id=funded.pk, amount=500, idempotency_key="k1", correlation_id="c", now=now
    )
    # then
    assert second.replayed is True
    assert second.journal_entry_id == first.journal_entry_id
    assert second.balance.available == 500


@pytest.mark.django_db
def test_reserve_moves_available_to_held(make_account, now) -> None:
    # given
    funded = make_account(10_000)
    # when
    result = services.entry_reserve(account_id=funded.pk, estimated_cost=3_000, correlation_id="c", now=now)
    # then
    assert legs(result.entry.id, "billing_reserve") == [(funded.pk, "available", -3_000), (funded.pk, "held", 3_000)]
    assert (result.balance.available, result.balance.held) == (7_000, 3_000)
    assert result.entry.expires_at == now + timedelta(seconds=300)


@pytest.mark.django_db
def test_insufficient_funds_writes_nothing(make_account, now) -> None:
    # given
    funded = make_account(999)
    before = ledger_snapshot()
    # when
    with pytest.raises(InsufficientFunds) as info:
        services.entry_reserve(account_id=funded.pk, estimated_cost=1_000, correlation_id="c", now=now)
    # then
    assert info.value.status == 402
    assert info.value.code == "insufficient_funds"
    assert ledger_snapshot() == before


@pytest.mark.django_db
def test_reserve_may_use_the_credit_limit(make_account, now) -> None:
    # given
    funded = make_account(100, credit_limit=900)
    # when
    result = services.entry_reserve(account_id=funded.pk, estimated_cost=1_000, correlation_id="c", now=now)
    # then
    assert (result.balance.available, result.balance.held) == (-900, 1_000)
    with pytest.raises(InsufficientFunds):
        services.entry_reserve(account_id=funded.pk, estimated_cost=1, correlation_id="c", now=now)


@pytest.mark.django_db
def test_partial_capture_returns_the_rest_in_the_same_journal(make_account, now) -> None:
    # given
    funded = make_account(10_000)
    entry_id = services.entry_reserve(account_id=funded.pk, estimated_cost=3_000, correlation_id="c", now=now).entry.id
    # when
    result = services.entry_commit(entry_id=entry_id, actual_cost=2_500, now=now)
    # then
    revenue = system_account_id(SYSTEM_REVENUE)
    assert legs(entry_id, "billing_commit") == sorted(
        [(funded.pk, "held", -3_000), (revenue, "available", 2_500), (funded.pk, "available", 500)]
    )
    assert (result.balance.available, result.balance.held) == (7_500, 0)
    assert result.entry.state == EntryState.COMMITTED
    assert result.entry.actual_cost == 2_500


@pytest.mark.django_db
def test_full_capture_has_two_legs(make_account, now) -> None:
    # given
    funded = make_account(10_000)
    entry_id = services.entry_reserve(account_id=funded.pk, estimated_cost=1_000, correlation_id="c", now=now).entry.id
    # when
    services.entry_commit(entry_id=entry_id, actual_cost=1_000, now=now)
    # then
    assert legs(entry_id, "billing_commit") == sorted(
        [(funded.pk, "held", -1_000), (system_account_id(SYSTEM_REVENUE), "available", 1_000)]
    )


@pytest.mark.django_db
def test_commit_of_zero_returns_the_whole_hold(make_account, now) -> None:
    # given
    funded = make_account(10_000)
    entry_id = services.entry_reserve(account_id=funded.pk, estimated_cost=1_000, correlation_id="c", now=now).entry.id
    # when
    result = services.entry_commit(entry_id=entry_id, actual_cost=0, now=now)
    # then
    assert legs(entry_id, "billing_commit") == sorted([(funded.pk, "held", -1_000), (funded.pk, "available", 1_000)])
    assert (result.balance.available, result.balance.held) == (10_000, 0)


@pytest.mark.django_db
def test_commit_above_the_hold_is_refused_without_overcapture(make_account, now) -> None:
    # given
    funded = make_account(10_000)
    entry_id = services.entry_reserve(account_id=funded.pk, estimated_cost=1_000, correlation_id="c", now=now).entry.id
    before = ledger_snapshot()
    # when
    with pytest.raises(ExceedsHold) as info:
        services.entry_commit(entry_id=entry_id, actual_cost=1_001, now=now)
    # then
    assert (info.value.status, info.value.code) == (409, "exceeds_hold")
    assert ledger_snapshot() == before


@pytest.mark.django_db
def test_overcapture_debits_the_extra_under_the_limit(make_account, now) -> None:
    # given
    funded = make_account(1_500, allow_overcapture=True)
    entry_id = services.entry_reserve(account_id=funded.pk, estimated_cost=1_000, correlation_id="c", now=now).entry.id
    # when
    result = services.entry_commit(entry_id=entry_id, actual_cost=1_400, now=now)
    # then
    assert legs(entry_id, "billing_commit") == sorted(
        [
            (funded.pk, "held", -1_000),
            (system_account_id(SYSTEM_REVENUE), "available", 1_400),
            (funded.pk, "available", -400),
        ]
    )
    assert (result.balance.available, result.balance.held) == (100, 0)


@pytest.mark.django_db
def test_overcapture_beyond_the_limit_is_insufficient_funds(make_account, now) -> None:
    # given
    funded = make_account(1_500, allow_overcapture=True)
    entry_id = services.entry_reserve(account_id=funded.pk, estimated_cost=1_000, correlation_id="c", now=now).entry.id
    before = ledger_snapshot()
    # when
    with pytest.raises(InsufficientFunds):
        services.entry_commit(entry_id=entry_id, actual_cost=1_501, now=now)
    # then
    assert ledger_snapshot() == before


@pytest.mark.django_db
def test_commit_after_the_hold_expired_is_refused(make_account, now) -> None:
    # given
    funded = make_account(10_000)
    entry_id = services.entry_reserve(
        account_id=funded.pk, estimated_cost=1_000, correlation_id="c", ttl_seconds=1, now=now
    ).entry.id
    before = ledger_snapshot()
    # when
    with pytest.raises(HoldExpired) as info:
        services.entry_commit(entry_id=entry_id, actual_cost=500, now=now + timedelta(seconds=2))
    # then
    assert info.value.code == "hold_expired"
    assert ledger_snapshot() == before


@pytest.mark.django_db
def test_release_returns_the_hold(make_account, now) -> None:
    # given
    funded = make_account(10_000)
    entry_id = services.entry_reserve(account_id=funded.pk, estimated_cost=3_000, correlation_id="c", now=now).entry.id
    # when
    result = services.entry_release(entry_id=entry_id, reason="pre_stream_failure", now=now)
    # then
    assert legs(entry_id, "billing_release") == sorted([(funded.pk, "held", -3_000), (funded.pk, "available", 3_000)])
    assert (result.balance.available, result.balance.held) == (10_000, 0)
    assert result.entry.release_reason == "pre_stream_failure"


@pytest.mark.django_db
def test_void_refunds_revenue_to_available(make_account, now) -> None:
    # given
    funded = make_account(10_000)
    entry_id = services.entry_reserve(account_id=funded.pk, estimated_cost=3_000, correlation_id="c", now=now).entry.id
    services.entry_commit(entry_id=entry_id, actual_cost=2_000, now=now)
    # when
    result = services.entry_void(entry_id=entry_id, reason="customer complaint", actor="alice", now=now)
    # then
    assert legs(entry_id, "billing_void") == sorted(
        [(system_account_id(SYSTEM_REVENUE), "available", -2_000), (funded.pk, "available", 2_000)]
    )
    assert (result.balance.available, result.balance.held) == (10_000, 0)
    audit = AuditEvent.objects.get(billing_entry_id=entry_id, event_type="billing_void")
    assert (audit.actor, audit.reason, audit.payload["from_state"]) == ("alice", "customer complaint", "COMMITTED")


@pytest.mark.django_db
def test_every_operation_writes_one_audit_row_in_order(make_account, now) -> None:
    # given
    funded = make_account(10_000)
    # when
    entry_id = services.entry_reserve(account_id=funded.pk, estimated_cost=3_000, correlation_id="c9", now=now).entry.id
    services.entry_commit(entry_id=entry_id, actual_cost=2_000, now=now)
    services.entry_void(entry_id=entry_id, reason="r", actor="a", now=now)
    # then
    rows = list(AuditEvent.objects.filter(billing_entry_id=entry_id).order_by("sequence"))
    assert [r.event_type for r in rows] == ["billing_reserve", "billing_commit", "billing_void"]
    assert {r.correlation_id for r in rows} == {"c9"}
    assert rows[1].payload["actual_cost"] == "2000"
    assert rows[1].payload["estimated_cost"] == "3000"


@pytest.mark.django_db
@with_upstream
def test_commit_continues_to_finalize_pending_when_an_upstream_is_configured(make_account, now) -> None:
    # given
    funded = make_account(10_000)
    entry_id = services.entry_reserve(account_id=funded.pk, estimated_cost=3_000, correlation_id="c", now=now).entry.id
    # when
    result = services.entry_commit(entry_id=entry_id, actual_cost=2_000, now=now)
    # then
    assert result.entry.state == EntryState.FINALIZE_PENDING
    events = list(
        AuditEvent.objects.filter(billing_entry_id=entry_id).order_by("sequence").values_list("event_type", flat=True)
    )
    assert events == ["billing_reserve", "billing_commit", "billing_finalize_pending"]


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_first_use_of_a_system_account_is_not_cached(make_account) -> None:
    # given: the first mint of the process fails (unknown account) after creating the treasury row
    services.system_account_cache_clear()
    from billing.models import Account

    Account.objects.filter(kind="system").delete()
    from django.utils import timezone

    with pytest.raises(services.AccountNotFound):
        services.account_credit_mint(
            account_id=999_999_999, amount=10, idempotency_key="k-fail", correlation_id="c", now=timezone.now()
        )
    # when: the next mint runs
    funded = make_account(0)
    result = services.account_credit_mint(
        account_id=funded.pk, amount=10, idempotency_key="k-ok", correlation_id="c", now=timezone.now()
    )
    # then: it commits (no stale treasury id)
    assert result.balance.available == 10
