"""The one client of NFT data: the batch API (Alchemy's getNFTsForOwner) and ``ownerOf`` over JSON-RPC.

``detect_nfts(wallet)``: one call per page (following ``pageKey``), filtered to
``NFT_COLLECTIONS``, cached in Redis for 300 s (one SET with EX). A breaker
(3 consecutive failures → open for 60 s, then one trial) guards the API; when
it is open or the call fails, ``ownerOf`` is asked on chain for the token ids
the wallet claims (at most MAX_CLAIMED), marked ``rpc_fallback`` and not cached.
No API key → ``source: "disabled"`` (logged once).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
from django.conf import settings

from credits.chain import RpcUnavailable, rpc_call
from finn.breaker import CircuitBreaker
from finn.degradation import redis_guard
from finn.redis import get_redis
from finn.registry import breaker_register
from finn.untrusted_json import json_loads_untrusted

logger = logging.getLogger(__name__)
MAX_PAGES = 20
MAX_CLAIMED = 20
OWNER_OF = "0x6352211e"
_disabled_logged = False


@dataclass(frozen=True)
class DetectedNft:
    collection: str
    token_id: str
    title: str


@dataclass(frozen=True)
class Detection:
    wallet: str
    nfts: list[DetectedNft] = field(default_factory=list)
    source: str = "alchemy"  # alchemy | rpc_fallback | disabled
    cached: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "nfts": [asdict(n) for n in self.nfts]}


@breaker_register("nft_detection")
def detection_breaker() -> CircuitBreaker:
    return CircuitBreaker(name="nft_detection", failure_threshold=3, window_seconds=60, cooldown_seconds=60)


def _cache_key(wallet: str) -> str:
    return f"nft:detection:{wallet}"


def _fetch(wallet: str) -> list[DetectedNft]:
    collections = set(settings.NFT_COLLECTIONS)
    found: list[DetectedNft] = []
    page_key: str | None = None
    for _ in range(MAX_PAGES):
        params: list[tuple[str, str | int | float | bool | None]] = [
            ("owner", wallet),
            ("withMetadata", "true"),
            ("pageSize", "100"),
        ]
        params += [("contractAddresses[]", c) for c in sorted(collections)]
        if page_key:
            params.append(("pageKey", page_key))
        response = httpx.get(
            f"{settings.ALCHEMY_BASE_URL}/getNFTsForOwner",
            params=params,
            timeout=settings.NFT_DETECTION_TIMEOUT_SECONDS,
        )
        if response.status_code != 200:
            raise ValueError(f"http {response.status_code}")
        # NFT metadata is user-written: pages are larger and may nest deeper than a request body.
        body = json_loads_untrusted(response.content, max_bytes=16 * 1024 * 1024, max_depth=128)
        if not isinstance(body, dict) or not isinstance(body.get("ownedNfts"), list):
            raise ValueError("no ownedNfts")
        for item in body["ownedNfts"]:
            contract = str((item.get("contract") or {}).get("address") or "").lower()
            token_id = str(item.get("tokenId") or "")
            if contract in collections and token_id.isdigit():
                found.append(
                    DetectedNft(contract, token_id, str(item.get("name") or item.get("title") or f"Token #{token_id}"))
                )
        page_key = body.get("pageKey") or None
        if not page_key:
            return found
    raise ValueError("too many pages")


def owner_of(collection: str, token_id: str) -> str | None:
    """The owner of one token on chain (lower-case), or None when the node cannot say."""
    data = OWNER_OF + int(token_id).to_bytes(32, "big").hex()
    try:
        result = rpc_call(settings.NFT_RPC_URL, "eth_call", [{"to": collection, "data": data}, "latest"])
    except RpcUnavailable:
        return None
    if not isinstance(result, str) or len(result) != 66:
        return None
    return "0x" + result[-40:].lower()


def _fallback(wallet: str, claimed: list[tuple[str, str]]) -> Detection:
    nfts = [
        DetectedNft(collection, token_id, f"Token #{token_id}")
        for collection, token_id in claimed[:MAX_CLAIMED]
        if collection in settings.NFT_COLLECTIONS and owner_of(collection, token_id) == wallet
    ]
    return Detection(wallet=wallet, nfts=nfts, source="rpc_fallback")


def detect_nfts(wallet: str, *, claimed: list[tuple[str, str]] | None = None) -> Detection:
    """The wallet's NFTs in the configured collections (see the module docstring)."""
    global _disabled_logged
    wallet = wallet.lower()
    if not settings.ALCHEMY_API_KEY:
        if not _disabled_logged:
            logger.warning("ALCHEMY_API_KEY is not set: NFT detection is disabled")
            _disabled_logged = True
        return Detection(wallet=wallet, source="disabled")
    cached = redis_guard("nft_detection_cache", lambda: get_redis().get(_cache_key(wallet)), fallback=lambda: None)
    if isinstance(cached, str):
        return Detection(wallet=wallet, nfts=[DetectedNft(**n) for n in json.loads(cached)], cached=True)
    breaker = detection_breaker()
    if not breaker.allow().allowed:
        return _fallback(wallet, claimed or [])
    try:
        nfts = _fetch(wallet)
    except (httpx.HTTPError, ValueError) as exc:
        state = breaker.record_failure()
        logger.warning("NFT detection failed", extra={"error": f"{type(exc).__name__}: {exc}"[:200], "state": state})
        return _fallback(wallet, claimed or [])
    breaker.record_success()
    payload = json.dumps([asdict(n) for n in nfts])
    redis_guard(
        "nft_detection_cache",
        lambda: get_redis().set(_cache_key(wallet), payload, ex=settings.NFT_DETECTION_CACHE_SECONDS),
        fallback=lambda: None,
    )
    return Detection(wallet=wallet, nfts=nfts)


def owns(wallet: str, collection: str, token_id: str) -> bool:
    """Re-verify ownership: on chain when a node is configured, else a fresh detection."""
    wallet = wallet.lower()
    if settings.NFT_RPC_URL:
        owner = owner_of(collection, token_id)
        if owner is not None:
            return owner == wallet
    detection = detect_nfts(wallet, claimed=[(collection, token_id)])
    return any(n.collection == collection and n.token_id == token_id for n in detection.nfts)
