"""Batch NFT detection: paging, collection filter, cache, breaker and the on-chain fallback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.test import override_settings

from finn.redis import get_redis
from nft.detection import Detection, detect_nfts, detection_breaker, owns
from tests.fakes import NftApi, fake_json_rpc, fake_nft_api

from .helpers import COLLECTION, OTHER_COLLECTION

WALLET = "0x" + "ab" * 20


@pytest.fixture
def api() -> Iterator[NftApi]:
    owned = {
        WALLET: [
            (COLLECTION, "1", "One"),
            (COLLECTION, "2", "Two"),
            (OTHER_COLLECTION, "9", "Elsewhere"),
            (COLLECTION, "3", "Three"),
            ("0x" + "99" * 20, "4", "Unlisted"),
        ]
    }
    with (
        fake_nft_api(owned=owned, page_size=2) as fake,
        override_settings(
            ALCHEMY_API_KEY="test-key", ALCHEMY_BASE_URL=fake.url, NFT_COLLECTIONS=[COLLECTION, OTHER_COLLECTION]
        ),
    ):
        detection_breaker().reset()
        yield fake


def _ids(detection: Detection) -> list[tuple[str, str]]:
    return [(n.collection, n.token_id) for n in detection.nfts]


def test_detection_follows_pages_filters_collections_and_caches(api: NftApi) -> None:
    first = detect_nfts(WALLET.upper().replace("0X", "0x"))
    second = detect_nfts(WALLET)
    assert first.source == "alchemy"
    assert first.cached is False
    assert _ids(first) == [(COLLECTION, "1"), (COLLECTION, "2"), (OTHER_COLLECTION, "9"), (COLLECTION, "3")]
    assert len(api.calls) == 2  # two pages (the fake filters by contractAddresses[] as the API does)
    assert api.calls[1]["pageKey"] == ["2"]
    assert second.cached is True
    assert _ids(second) == _ids(first)
    assert len(api.calls) == 2  # the second answer came from Redis
    assert 290 <= get_redis().ttl(f"nft:detection:{WALLET}") <= 300


def test_no_api_key_means_detection_is_disabled() -> None:
    with override_settings(ALCHEMY_API_KEY=""):
        assert detect_nfts(WALLET).source == "disabled"


def test_three_failures_open_the_breaker_and_the_rpc_fallback_answers_uncached(api: NftApi) -> None:
    api.failing = True

    def owner_of(params: list) -> str:  # type: ignore[type-arg]
        token_id = int(params[0]["data"][10:], 16)
        return "0x" + "00" * 12 + (WALLET[2:] if token_id == 1 else "11" * 20)

    with fake_json_rpc({"eth_call": owner_of}) as node, override_settings(NFT_RPC_URL=node["url"]):
        claimed = [(COLLECTION, "1"), (COLLECTION, "5")]
        results = [detect_nfts(WALLET, claimed=claimed) for _ in range(4)]
    assert [r.source for r in results] == ["rpc_fallback"] * 4
    assert all(_ids(r) == [(COLLECTION, "1")] for r in results)
    assert len(api.calls) == 3  # the fourth call did not reach the API: the breaker is open
    assert detection_breaker().state() == "OPEN"
    assert get_redis().get(f"nft:detection:{WALLET}") is None  # fallback answers are not cached


def test_the_breaker_lets_one_trial_through_after_its_cooldown(api: NftApi) -> None:
    api.failing = True
    for _ in range(3):
        detect_nfts(WALLET)
    api.failing = False
    breaker = detection_breaker()
    get_redis().hset(f"billing:breaker:{breaker.name}", "opened_at", "0")  # as if 60 s had passed
    assert detect_nfts(WALLET).source == "alchemy"
    assert breaker.state() == "CLOSED"


def test_ownership_is_checked_on_chain_when_a_node_is_configured(api: NftApi) -> None:
    with fake_json_rpc({"eth_call": "0x" + "00" * 12 + WALLET[2:]}) as node, override_settings(NFT_RPC_URL=node["url"]):
        assert owns(WALLET, COLLECTION, "7") is True
        assert owns("0x" + "cd" * 20, COLLECTION, "7") is False
    with override_settings(NFT_RPC_URL=""):
        assert owns(WALLET, COLLECTION, "2") is True  # through detection
        assert owns(WALLET, COLLECTION, "8") is False
