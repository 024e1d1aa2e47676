"""Agent budget policies: per-request maximum, rolling-hour spend and requests, model allowlist — exact under races."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.utils import timezone

from billing import services
from billing.errors import BudgetPolicyExceeded, BudgetPolicyRateLimited
from billing.models import Account, BillingEntry, JournalEntry
from credits.api_keys import api_key_create
from credits.models import WalletIdentity
from credits.services import agent_wallet_create
from finn.models import AuditEvent
from tests.conftest import post_json, run_threads
from tests.second_factor import verified_client

OWNER = "0x" + "cd" * 20
RESERVE = "/api/v1/billing/entries"


def _agent(credit: int = 100_000_000) -> Account:
    wallet = agent_wallet_create(owner_address=OWNER, token_id="7", daily_cap=None, now=timezone.now())
    services.account_credit_mint(
        account_id=wallet.account_id, amount=credit, idempotency_key=f"p:{wallet.account_id}", correlation_id="t",
        now=timezone.now(),
    )  # fmt: skip
    return wallet.account


def _policy(agent: Account, **rules: object) -> None:
    base = {"per_request_max": None, "hourly_spend_limit": None, "hourly_request_limit": None, "allowed_models": None}
    services.spend_policy_set(account_id=agent.pk, actor="test", now=timezone.now(), **{**base, **rules})


def _reserve(agent: Account, estimate: int, *, now: datetime | None = None) -> services.EntryResult:
    return services.entry_reserve(
        account_id=agent.pk, estimated_cost=estimate, correlation_id="c", now=now or timezone.now()
    )


@pytest.mark.django_db(transaction=True)
def test_64_concurrent_reserves_against_an_hourly_request_limit_admit_exactly_the_limit() -> None:
    # given: 25 requests per rolling hour, funds for all 64
    agent = _agent()
    _policy(agent, hourly_request_limit=25)
    now = timezone.now()
    # when
    results = run_threads(64, lambda _: _reserve(agent, 1_000, now=now))
    # then: 25 holds, 39 refusals that wrote nothing and say when the hour frees a slot
    won = [r for r in results if isinstance(r, services.EntryResult)]
    refused = [r for r in results if isinstance(r, BudgetPolicyRateLimited)]
    assert (len(won), len(refused)) == (25, 39), [r for r in results if not isinstance(r, services.EntryResult)][:3]
    assert all(r.extra["rule"] == "hourly_requests" and r.extra["limit"] == 25 for r in refused)
    assert all(r.headers["Retry-After"] == "3600" for r in refused)
    assert BillingEntry.objects.filter(account=agent).count() == 25
    assert JournalEntry.objects.filter(billing_entry__account=agent).count() == 25
    agent.refresh_from_db()
    assert agent.held == 25_000


@pytest.mark.django_db(transaction=True)
def test_64_concurrent_reserves_against_an_hourly_spend_limit_spend_exactly_the_limit() -> None:
    # given: 30,000 µUSD per rolling hour; each reserve holds 1,000
    agent = _agent()
    _policy(agent, hourly_spend_limit=30_000)
    now = timezone.now()
    # when
    results = run_threads(64, lambda _: _reserve(agent, 1_000, now=now))
    # then
    won = [r for r in results if isinstance(r, services.EntryResult)]
    refused = [r for r in results if isinstance(r, BudgetPolicyExceeded)]
    assert (len(won), len(refused)) == (30, 34)
    assert all(r.status == 402 and r.extra["rule"] == "hourly_spend" for r in refused)
    assert {r.extra["used"] for r in refused} == {30_000}
    agent.refresh_from_db()
    assert agent.held == 30_000


@pytest.mark.django_db
def test_spend_counts_actual_costs_and_frees_released_holds_and_resets_with_the_rolling_hour() -> None:
    # given: 10,000 per hour
    agent = _agent()
    _policy(agent, hourly_spend_limit=10_000)
    start = timezone.now() - timedelta(minutes=50)
    first = _reserve(agent, 6_000, now=start)
    services.entry_commit(entry_id=first.entry.id, actual_cost=2_000, now=start)  # counts 2,000 from now on
    second = _reserve(agent, 5_000, now=start + timedelta(minutes=5))
    services.entry_release(entry_id=second.entry.id, reason="user_cancel", now=start + timedelta(minutes=5))
    # when: 2,000 charged + 8,000 held = the limit; one more µUSD is refused until the first leaves the hour
    at = start + timedelta(minutes=20)
    fits = _reserve(agent, 8_000, now=at)
    with pytest.raises(BudgetPolicyExceeded) as over:
        _reserve(agent, 1, now=at)
    # then
    assert fits.entry.estimated_cost == 8_000
    assert over.value.extra["used"] == 10_000
    assert over.value.extra["resets_at"] == (start + timedelta(hours=1)).isoformat()
    assert over.value.headers["Retry-After"] == str(int(timedelta(minutes=40).total_seconds()))
    # an hour after the first entry it no longer counts
    assert _reserve(agent, 2_000, now=start + timedelta(hours=1, seconds=1)).entry.estimated_cost == 2_000


@pytest.mark.django_db
def test_per_request_maximum_covers_extends_and_the_model_allowlist_refuses_others() -> None:
    agent = _agent()
    _policy(agent, per_request_max=5_000)
    held = _reserve(agent, 4_000)
    with pytest.raises(BudgetPolicyExceeded) as too_big:
        _reserve(agent, 5_001)
    with pytest.raises(BudgetPolicyExceeded) as grown:
        services.entry_extend(entry_id=held.entry.id, additional_cost=1_001, now=timezone.now())
    assert (
        services.entry_extend(entry_id=held.entry.id, additional_cost=1_000, now=timezone.now()).entry.estimated_cost
        == 5_000
    )
    assert (too_big.value.extra["rule"], too_big.value.extra["resets_at"]) == ("per_request_max", None)
    assert "Retry-After" not in too_big.value.headers
    assert grown.value.extra["rule"] == "per_request_max"
    assert BillingEntry.objects.get(pk=held.entry.id).estimated_cost == 5_000
    # a model allowlist: metered reserves of those models only; a raw estimate names no model
    _policy(agent, allowed_models=["claude-haiku-4"])
    key = api_key_create(account=agent, now=timezone.now()).secret
    client = Client(headers={"Authorization": f"Bearer {key}"})
    allowed = post_json(client, RESERVE, {"model": "claude-haiku-4", "input_tokens": 10, "max_output_tokens": 10})
    other = post_json(client, RESERVE, {"model": "claude-sonnet-4", "input_tokens": 10, "max_output_tokens": 10})
    raw = post_json(client, RESERVE, {"estimated_cost": 100})
    assert allowed.status_code == 201
    assert (other.status_code, other.json()["code"], other.json()["rule"]) == (
        402,
        "budget_policy_exceeded",
        "model_allowlist",
    )
    assert raw.status_code == 402
    assert raw.json()["model"] == ""


@pytest.mark.django_db
def test_the_owner_sets_the_policy_through_the_api_the_agent_cannot_and_others_do_not_see_it(make_account) -> None:
    # given: the owner's account (its signed-in wallet is the agent's owner address), the agent's own key
    agent = _agent()
    owner = make_account(0)
    WalletIdentity.objects.create(address=OWNER, account=owner.account, created_at=timezone.now())
    agent_client = Client(
        headers={"Authorization": f"Bearer {api_key_create(account=agent, now=timezone.now()).secret}"}
    )
    path = f"/api/v1/agents/{agent.pk}/policy"
    body = {"per_request_max": 50_000, "hourly_spend_limit": 1_000_000, "hourly_request_limit": 600,
            "allowed_models": ["claude-haiku-4", "gpt-4.1-mini"]}  # fmt: skip
    # when
    set_by_owner = owner.client().put(path, body, content_type="application/json")
    by_agent = agent_client.put(path, {**body, "per_request_max": None}, content_type="application/json")
    read_by_agent = agent_client.get(path)
    stranger = make_account(0).client().get(path)
    bad = owner.client().put(path, {**body, "hourly_request_limit": 0}, content_type="application/json")
    # then
    assert set_by_owner.status_code == 200, set_by_owner.content
    assert set_by_owner.json() == {"account_id": agent.pk, **body}
    assert by_agent.status_code == 403
    assert read_by_agent.json()["per_request_max"] == 50_000
    assert stranger.status_code == 404
    assert bad.status_code == 400
    audit = AuditEvent.objects.get(event_type="billing_spend_policy_set")
    assert audit.payload["to"]["per_request_max"] == "50000"
    # every rule null removes the policy
    cleared = owner.client().put(path, dict.fromkeys(body), content_type="application/json")
    assert cleared.json()["hourly_request_limit"] is None
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM billing_spendpolicy")
        assert cursor.fetchone()[0] == 0


@pytest.mark.django_db
def test_finance_staff_set_a_policy_in_the_admin() -> None:
    agent = _agent()
    admin_user = get_user_model().objects.create_superuser("policy-admin", "p@example.com", "pw")
    client = verified_client(admin_user)
    response = client.post(
        "/admin/billing/spendpolicy/add/",
        {"account": agent.pk, "per_request_max": "7000", "hourly_request_limit": "60", "allowed_models": ""},
    )
    assert response.status_code == 302, response.content[:3000]
    assert services.spend_policy_get(account_id=agent.pk).per_request_max == 7_000
    assert AuditEvent.objects.get(event_type="billing_spend_policy_set").actor == "policy-admin"
