"""Daily spending caps of agent wallets: holds count, atomically, per UTC day."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone
from prometheus_client import REGISTRY

from billing import services
from billing.errors import DailyCapExceeded
from billing.models import Account, DailySpend
from credits.api_keys import api_key_create
from credits.services import agent_wallet_create
from finn.models import AuditEvent
from tests.conftest import run_threads

MIDNIGHT = datetime(2026, 11, 23, 0, 0, 0, tzinfo=UTC)


def _agent(
    *, cap: int | None, credit: int = 1_000_000, threshold: int | None = None, overcapture: bool = False
) -> Account:
    wallet = agent_wallet_create(
        owner_address="0x" + "ab" * 20,
        token_id="42",
        daily_cap=cap,
        refill_threshold=threshold,
        now=timezone.now(),
    )
    account = wallet.account
    if overcapture:
        Account.objects.filter(pk=account.pk).update(allow_overcapture=True)
    services.account_credit_mint(
        account_id=account.pk,
        amount=credit,
        idempotency_key=f"agent:{account.pk}",
        correlation_id="t",
        now=timezone.now(),
    )
    return account


def _day(account: Account, day: datetime) -> tuple[int, int]:
    row = DailySpend.objects.get(account=account, day=day.date())
    return row.spent, row.held


@pytest.mark.django_db(transaction=True)
def test_64_concurrent_reserves_at_the_cap_overspend_by_zero() -> None:
    # given: plenty of balance, a cap that fits exactly 10 holds
    agent = _agent(cap=10_000, credit=10_000_000)
    now = timezone.now()

    def reserve(_: int) -> object:
        return services.entry_reserve(account_id=agent.pk, estimated_cost=1_000, correlation_id="c", now=now)

    # when
    results = run_threads(64, reserve)
    # then
    assert sum(isinstance(r, services.EntryResult) for r in results) == 10
    assert sum(isinstance(r, DailyCapExceeded) for r in results) == 54
    assert _day(agent, now) == (0, 10_000)


@pytest.mark.django_db
def test_commit_counts_the_actual_and_release_frees_the_hold() -> None:
    # given
    agent = _agent(cap=5_000)
    now = timezone.now()
    first = services.entry_reserve(account_id=agent.pk, estimated_cost=2_000, correlation_id="c", now=now).entry
    second = services.entry_reserve(account_id=agent.pk, estimated_cost=2_000, correlation_id="c", now=now).entry
    # when
    services.entry_commit(entry_id=first.id, actual_cost=1_200, now=now)
    services.entry_release(entry_id=second.id, reason="user_cancel", now=now)
    # then
    assert _day(agent, now) == (1_200, 0)
    with pytest.raises(DailyCapExceeded) as info:
        services.entry_reserve(account_id=agent.pk, estimated_cost=3_801, correlation_id="c", now=now)
    assert info.value.extra["remaining"] == 3_800
    assert info.value.status == 402


@pytest.mark.django_db
def test_expired_holds_give_the_budget_back() -> None:
    # given
    agent = _agent(cap=5_000)
    now = timezone.now()
    services.entry_reserve(account_id=agent.pk, estimated_cost=4_000, correlation_id="c", ttl_seconds=1, now=now)
    # when
    services.holds_expire(now=now + timedelta(seconds=2))
    # then
    assert _day(agent, now) == (0, 0)


@pytest.mark.django_db
def test_overcapture_beyond_the_cap_is_capped_and_recorded() -> None:
    # given: cap 1_500, a hold of 1_000, a request that really cost 1_800
    agent = _agent(cap=1_500, overcapture=True)
    now = timezone.now()
    entry_id = services.entry_reserve(account_id=agent.pk, estimated_cost=1_000, correlation_id="c", now=now).entry.id
    before = REGISTRY.get_sample_value("finn_billing_daily_cap_applied_total") or 0
    # when
    result = services.entry_commit(entry_id=entry_id, actual_cost=1_800, now=now)
    # then: charged up to the cap, never free, and recorded
    assert result.entry.actual_cost == 1_500
    assert result.balance.available == 1_000_000 - 1_500
    assert _day(agent, now) == (1_500, 0)
    applied = AuditEvent.objects.get(billing_entry_id=entry_id, event_type="billing_daily_cap_applied")
    assert (applied.payload["requested_actual_cost"], applied.payload["charged_actual_cost"]) == ("1800", "1500")
    assert REGISTRY.get_sample_value("finn_billing_daily_cap_applied_total") == before + 1


@pytest.mark.django_db
def test_the_cap_rolls_over_at_midnight_utc() -> None:
    # given: the day's cap is used up a second before midnight
    agent = _agent(cap=1_000)
    before_midnight = MIDNIGHT - timedelta(seconds=1)
    services.entry_reserve(account_id=agent.pk, estimated_cost=1_000, correlation_id="c", now=before_midnight)
    with pytest.raises(DailyCapExceeded):
        services.entry_reserve(account_id=agent.pk, estimated_cost=1, correlation_id="c", now=before_midnight)
    # when: a second after midnight
    after = services.entry_reserve(
        account_id=agent.pk, estimated_cost=1_000, correlation_id="c", now=MIDNIGHT + timedelta(seconds=1)
    )
    # then: a fresh day; yesterday's hold stays counted on yesterday
    assert after.entry.cap_day == MIDNIGHT.date()
    assert _day(agent, before_midnight) == (0, 1_000)
    assert _day(agent, MIDNIGHT) == (0, 1_000)


@pytest.mark.django_db
def test_a_hold_from_yesterday_settles_on_yesterday() -> None:
    # given
    agent = _agent(cap=1_000)
    entry_id = services.entry_reserve(
        account_id=agent.pk,
        estimated_cost=800,
        correlation_id="c",
        ttl_seconds=600,
        now=MIDNIGHT - timedelta(seconds=30),
    ).entry.id
    # when
    services.entry_commit(entry_id=entry_id, actual_cost=500, now=MIDNIGHT + timedelta(seconds=30))
    # then
    assert _day(agent, MIDNIGHT - timedelta(seconds=30)) == (500, 0)
    assert not DailySpend.objects.filter(account=agent, day=MIDNIGHT.date()).exclude(spent=0, held=0).exists()


@pytest.mark.django_db
def test_user_accounts_have_no_cap(make_account, now) -> None:
    # given
    funded = make_account(10_000)
    # when
    services.entry_reserve(account_id=funded.pk, estimated_cost=9_000, correlation_id="c", now=now)
    # then
    assert not DailySpend.objects.filter(account_id=funded.pk).exists()


@pytest.mark.django_db
def test_low_balance_is_announced_once_per_day(django_capture_on_commit_callbacks) -> None:
    # given
    agent = _agent(cap=None, credit=10_000, threshold=5_000)
    now = timezone.now()
    before = REGISTRY.get_sample_value("finn_billing_low_balance_events_total") or 0
    # when: four commits that keep available above the threshold
    for moment in (now, now, now, now + timedelta(days=1)):
        with django_capture_on_commit_callbacks(execute=True):
            entry_id = services.entry_reserve(
                account_id=agent.pk, estimated_cost=1_000, correlation_id="c", now=moment
            ).entry.id
            services.entry_commit(entry_id=entry_id, actual_cost=1_000, now=moment)
    # then: available is 6_000, still above the threshold: no event yet
    assert REGISTRY.get_sample_value("finn_billing_low_balance_events_total") == before + 0
    with django_capture_on_commit_callbacks(execute=True):
        entry_id = services.entry_reserve(
            account_id=agent.pk, estimated_cost=3_000, correlation_id="c", now=now
        ).entry.id
        services.entry_commit(entry_id=entry_id, actual_cost=3_000, now=now)  # available 3_000 < 5_000
    with django_capture_on_commit_callbacks(execute=True):
        entry_id = services.entry_reserve(account_id=agent.pk, estimated_cost=500, correlation_id="c", now=now).entry.id
        services.entry_commit(entry_id=entry_id, actual_cost=500, now=now)  # still under: no second event
    assert REGISTRY.get_sample_value("finn_billing_low_balance_events_total") == before + 1
    assert DailySpend.objects.get(account=agent, day=now.date()).low_balance_notified_at is not None
    tomorrow = now + timedelta(days=2)
    with django_capture_on_commit_callbacks(execute=True):
        entry_id = services.entry_reserve(
            account_id=agent.pk, estimated_cost=100, correlation_id="c", now=tomorrow
        ).entry.id
        services.entry_commit(entry_id=entry_id, actual_cost=100, now=tomorrow)
    assert REGISTRY.get_sample_value("finn_billing_low_balance_events_total") == before + 2  # a new day, a new event


@pytest.mark.django_db
def test_budget_endpoint(make_account) -> None:
    # given
    agent = _agent(cap=5_000, threshold=2_000_000)
    key = api_key_create(account=agent, now=timezone.now()).secret
    services.entry_reserve(account_id=agent.pk, estimated_cost=1_500, correlation_id="c", now=timezone.now())
    stranger = make_account(0)
    from django.test import Client

    # when
    mine = Client(headers={"Authorization": f"Bearer {key}"}).get(f"/api/v1/agents/{agent.pk}/budget")
    theirs = stranger.client().get(f"/api/v1/agents/{agent.pk}/budget")
    # then
    body = mine.json()
    assert (body["daily_cap"], body["spent_today"], body["held_today"], body["remaining"]) == (5_000, 0, 1_500, 3_500)
    assert body["needs_refill"] is True
    assert theirs.status_code == 404


@pytest.mark.django_db
def test_identity_anchor_is_unique_and_inputs_are_checked() -> None:
    # given
    from credits.errors import IdentityAnchorTaken
    from finn.errors import InvalidRequest

    agent_wallet_create(
        owner_address="0x" + "11" * 20, token_id="1", daily_cap=1, identity_anchor="0xabc", now=timezone.now()
    )
    # when / then
    with pytest.raises(IdentityAnchorTaken) as taken:
        agent_wallet_create(
            owner_address="0x" + "22" * 20, token_id="2", daily_cap=1, identity_anchor="0xABC", now=timezone.now()
        )
    assert (taken.value.status, taken.value.code) == (409, "identity_anchor_taken")
    for bad in ({"owner_address": "0x123"}, {"token_id": "-1"}, {"identity_anchor": "zz"}):
        args = {"owner_address": "0x" + "33" * 20, "token_id": "3", "daily_cap": 1, "now": timezone.now(), **bad}
        with pytest.raises(InvalidRequest):
            agent_wallet_create(**args)  # type: ignore[arg-type]


@pytest.mark.django_db(transaction=True)
def test_daily_cache_follows_commits_expires_at_midnight_and_is_repaired() -> None:
    # given
    from billing.cache import daily_cache_key, daily_cache_read
    from billing.reconciliation import reconciliation_run
    from finn.redis import get_redis

    agent = _agent(cap=5_000)
    now = timezone.now()
    entry_id = services.entry_reserve(account_id=agent.pk, estimated_cost=2_000, correlation_id="c", now=now).entry.id
    services.entry_commit(entry_id=entry_id, actual_cost=1_500, now=now)
    # then: INCRBY kept the cache equal to the row, expiring at the next UTC midnight
    key = daily_cache_key(agent.pk, now.date())
    assert daily_cache_read(agent.pk, now.date()) == {"spent": 1_500, "held": 0}
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    assert get_redis().expiretime(key) == int(midnight.timestamp())
    # when: the cache is corrupted, reconciliation repairs it (audited)
    get_redis().hset(key, mapping={"spent": "7", "held": "7"})
    result = reconciliation_run(now=now)
    # then
    assert result is not None
    assert result.divergences_found >= 1
    assert daily_cache_read(agent.pk, now.date()) == {"spent": 1_500, "held": 0}
    assert AuditEvent.objects.filter(payload__kind="agent_daily_spend").count() == 1


@pytest.mark.django_db
def test_budget_reads_the_cache_and_postgres_when_redis_is_down(make_account) -> None:
    # given: the row says held 1_000; the cache is made to say 7 so the two sources differ
    from django.test import Client, override_settings

    from billing.cache import daily_cache_key
    from finn.redis import get_redis

    agent = _agent(cap=5_000)
    key = api_key_create(account=agent, now=timezone.now()).secret
    services.entry_reserve(account_id=agent.pk, estimated_cost=1_000, correlation_id="c", now=timezone.now())
    get_redis().hset(daily_cache_key(agent.pk, timezone.now().date()), mapping={"spent": "0", "held": "7"})
    client = Client(headers={"Authorization": f"Bearer {key}"})
    # when
    cached = client.get(f"/api/v1/agents/{agent.pk}/budget")
    with override_settings(REDIS_URL="redis://127.0.0.1:1/0"):
        fallback = client.get(f"/api/v1/agents/{agent.pk}/budget")
    # then
    assert cached.json()["held_today"] == 7  # read from Redis
    assert fallback.status_code == 200
    assert fallback.json()["held_today"] == 1_000  # read from PostgreSQL
