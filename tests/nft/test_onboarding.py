"""The onboarding flow: allowlist, flag, steps in order (one at a time), detection, ownership, the agent."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.test import Client, override_settings
from django.utils import timezone

from credits.models import AgentWallet
from finn.flags import allowlist_add, feature_flag_set
from nft.detection import detection_breaker
from nft.erc6551 import token_bound_account
from nft.models import OnboardingSession, Personality
from tests.conftest import run_threads
from tests.fakes import fake_nft_api

from .helpers import COLLECTION, OWNER, STRANGER, signed_in


@pytest.fixture(autouse=True)
def nft_api() -> Iterator[None]:
    owned = {OWNER.address.lower(): [(COLLECTION, "7", "Seven"), (COLLECTION, "8", "Eight")]}
    with (
        fake_nft_api(owned=owned) as fake,
        override_settings(ALCHEMY_API_KEY="k", ALCHEMY_BASE_URL=fake.url, NFT_COLLECTIONS=[COLLECTION], NFT_RPC_URL=""),
    ):
        detection_breaker().reset()
        yield


def _allow(wallet: str) -> None:
    allowlist_add(address=wallet, actor="test", now=timezone.now())


def _post(client: Client, path: str, body: object | None = None) -> object:
    return client.post(f"/api/v1/onboarding{path}", body or {}, content_type="application/json")


@pytest.mark.django_db
def test_the_whole_flow_ends_with_a_live_agent_at_its_erc6551_address() -> None:
    client, wallet = signed_in(OWNER)
    _allow(wallet)
    started = _post(client, "/start")
    assert started.status_code == 201, started.content
    session = started.json()["session_id"]
    assert started.json()["current_step"] == "nft_detect"
    detected = _post(client, f"/{session}/detect-nfts")
    assert detected.json()["source"] == "alchemy"
    assert [n["token_id"] for n in detected.json()["detected_nfts"]] == ["7", "8"]
    assert _post(client, f"/{session}/select-nft", {"collection": COLLECTION, "token_id": "7"}).status_code == 200
    configured = _post(client, f"/{session}/personality", {"voice": "creative"})
    assert configured.json()["personality_configured"] is True
    assert _post(client, f"/{session}/credits").json()["current_step"] == "agent_live"
    done = _post(client, f"/{session}/complete")
    assert done.status_code == 200
    assert done.json()["redirect_url"] == f"/agent/{COLLECTION}/7"
    expected = token_bound_account(
        token_contract=COLLECTION,
        token_id=7,
        chain_id=8453,
        implementation="0x55266d75D1a14E4572138116aF39863Ed6596E7F",
    )
    assert done.json()["agent_address"] == expected
    agent = AgentWallet.objects.get()
    assert (agent.account_address, agent.token_id, agent.owner_address) == (expected, "7", wallet)
    personality = Personality.objects.get()
    assert (personality.name, personality.voice) == ("Agent 7", "creative")
    assert client.get(f"/api/v1/onboarding/{session}").json()["code"] == "session_not_found"  # finished


@pytest.mark.django_db
def test_not_allowlisted_flag_off_and_no_wallet_are_refused() -> None:
    client, _ = signed_in(STRANGER)
    refused = _post(client, "/start")
    assert (refused.status_code, refused.json()["code"], refused.json()["waitlist_url"]) == (
        403,
        "not_allowlisted",
        "/waitlist/",
    )
    owner, wallet = signed_in(OWNER)
    _allow(wallet)
    feature_flag_set(name="onboarding", enabled=False, actor="test", now=timezone.now())
    off = _post(owner, "/start")
    assert (off.status_code, off.json()["code"]) == (404, "feature_disabled")
    assert _post(Client(), "/start").status_code == 401
    assert not OnboardingSession.objects.exists()


@pytest.mark.django_db
def test_steps_out_of_order_are_400_naming_both_steps() -> None:
    client, wallet = signed_in(OWNER)
    _allow(wallet)
    session = _post(client, "/start").json()["session_id"]
    early = _post(client, f"/{session}/complete")
    assert early.status_code == 400
    assert early.json() | {"error": ""} == {
        "error": "",
        "code": "invalid_step",
        "expected_step": "agent_live",
        "current_step": "nft_detect",
    }


@pytest.mark.django_db
def test_selecting_an_nft_the_wallet_does_not_own_is_403() -> None:
    client, wallet = signed_in(OWNER)
    _allow(wallet)
    session = _post(client, "/start").json()["session_id"]
    _post(client, f"/{session}/detect-nfts")
    refused = _post(client, f"/{session}/select-nft", {"collection": COLLECTION, "token_id": "99"})
    assert (refused.status_code, refused.json()["code"]) == (403, "not_owner")
    bad = _post(client, f"/{session}/select-nft", {"collection": "0xnope", "token_id": "1"})
    assert (bad.status_code, bad.json()["reason"]) == (400, "invalid_collection")
    assert OnboardingSession.objects.get().current_step == "nft_select"


@pytest.mark.django_db
def test_personality_step_updates_an_existing_personality_or_skips() -> None:
    client, wallet = signed_in(OWNER)
    _allow(wallet)
    for body, expected_voice in (({"voice": "sage"}, "sage"), ({"voice": "witty"}, "witty"), ({"skip": True}, "witty")):
        session = _post(client, "/start").json()["session_id"]
        _post(client, f"/{session}/detect-nfts")
        _post(client, f"/{session}/select-nft", {"collection": COLLECTION, "token_id": "8"})
        assert _post(client, f"/{session}/personality", body).status_code == 200
        assert Personality.objects.get().voice == expected_voice
    assert Personality.objects.get().version == 2  # created, updated, then skipped


@pytest.mark.django_db
def test_an_expired_session_is_404() -> None:
    client, wallet = signed_in(OWNER)
    _allow(wallet)
    session = _post(client, "/start").json()["session_id"]
    OnboardingSession.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    gone = _post(client, f"/{session}/detect-nfts")
    assert (gone.status_code, gone.json()["code"]) == (404, "session_not_found")


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_requests_cannot_both_advance_a_session() -> None:
    client, wallet = signed_in(OWNER)
    _allow(wallet)
    session = _post(client, "/start").json()["session_id"]
    _post(client, f"/{session}/detect-nfts")
    _post(client, f"/{session}/select-nft", {"collection": COLLECTION, "token_id": "7"})
    _post(client, f"/{session}/personality", {"skip": True})
    results = run_threads(8, lambda _: _post(client, f"/{session}/credits").status_code)
    assert results.count(200) == 1
    assert set(results) == {200, 400}
    row = OnboardingSession.objects.get()
    assert row.completed_steps.count("credit_purchase") == 1
    assert row.current_step == "agent_live"
