"""Writes of the credits app: used nonces, agent wallets, card credit packs.

API keys live in ``credits.api_keys``; sign-in in ``credits.signin``; x402 in ``credits.x402``.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction

from billing.models import AccountKind
from billing.services import account_create, account_credit_mint_in_transaction
from billing.units import Rounding, cu_to_micro_usd
from credits.errors import IdentityAnchorTaken
from credits.metrics import nonce_cleanup_duration_seconds, nonce_replays_total, nonces_deleted_total
from credits.models import AgentWallet, AgentWalletAnchor
from finn.audit import audit_append
from finn.db import violates
from finn.errors import InvalidRequest
from finn.validators import is_eth_address

# --- nonces -------------------------------------------------------------------


def nonce_key(*parts: str) -> str:
    """SHA-256 of the identifying fields (lower-cased, joined unambiguously)."""
    material = "\x1f".join(part.strip().lower() for part in parts)
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


def nonce_consume(*, kind: str, parts: tuple[str, ...], now: datetime) -> bool:
    """Record a nonce as used; False if it was used before (a replay)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO credits_usednonce (key, kind, created_at) VALUES (%s, %s, %s) ON CONFLICT (key) DO NOTHING"
            " RETURNING key",
            [nonce_key(kind, *parts), kind, now],
        )
        fresh = cursor.fetchone() is not None
    if not fresh:
        nonce_replays_total.labels(kind).inc()
    return fresh


@dataclass(frozen=True)
class CleanupResult:
    deleted: int
    seconds: float


def nonce_cleanup(
    *, now: datetime, max_age_hours: int | None = None, batch_size: int = 5000, max_batches: int = 200
) -> CleanupResult:
    """Delete used nonces older than the window in bounded batches; report the real count."""
    started = time.monotonic()
    cutoff = now - timedelta(hours=max_age_hours or settings.NONCE_MAX_AGE_HOURS)
    deleted = 0
    for _ in range(max_batches):
        with connection.cursor() as cursor:
            cursor.execute(
                "DELETE FROM credits_usednonce WHERE key IN (SELECT key FROM credits_usednonce WHERE created_at < %s"
                " LIMIT %s)",
                [cutoff, batch_size],
            )
            count = cursor.rowcount
        deleted += count
        if count < batch_size:
            break
    seconds = time.monotonic() - started
    nonces_deleted_total.inc(deleted)
    nonce_cleanup_duration_seconds.set(seconds)
    return CleanupResult(deleted=deleted, seconds=seconds)


# --- agent wallets --------------------------------------------------------------

_ANCHOR = re.compile(r"^0x[0-9a-fA-F]{1,64}$")


def _check_anchor(identity_anchor: str | None) -> str | None:
    if identity_anchor is None:
        return None
    if not isinstance(identity_anchor, str) or not _ANCHOR.match(identity_anchor):
        raise InvalidRequest("identity_anchor must be 0x-prefixed hex (at most 32 bytes)", reason="invalid_anchor")
    return identity_anchor.lower()


def agent_wallet_create(
    *,
    owner_address: str,
    token_id: str,
    daily_cap: int | None,
    refill_threshold: int | None = None,
    identity_anchor: str | None = None,
    token_contract: str = "",
    account_address: str = "",
    now: datetime,
) -> AgentWallet:
    """An agent account bound to an NFT and its owner, with its daily cap (and its ERC-6551 address)."""
    if not isinstance(owner_address, str) or not is_eth_address(owner_address):
        raise InvalidRequest("owner_address must be a 0x-prefixed 20-byte hex address", reason="invalid_address")
    if not isinstance(token_id, str) or not token_id.isdigit() or len(token_id) > 78:
        raise InvalidRequest("token_id must be a decimal uint256", reason="invalid_token_id")
    for name, value in (("token_contract", token_contract), ("account_address", account_address)):
        if value and not is_eth_address(value):
            raise InvalidRequest(f"{name} must be a 0x-prefixed 20-byte hex address", reason="invalid_address")
    anchor = _check_anchor(identity_anchor)
    try:
        with transaction.atomic(durable=True):
            account = account_create(
                kind=AccountKind.AGENT,
                name=f"agent {token_id}",
                daily_cap=daily_cap,
                refill_threshold=refill_threshold,
            )
            wallet = AgentWallet.objects.create(
                account=account,
                token_id=token_id,
                owner_address=owner_address.lower(),
                identity_anchor=anchor,
                token_contract=token_contract.lower(),
                account_address=account_address,
                created_at=now,
            )
            if anchor:
                AgentWalletAnchor.objects.create(wallet=wallet, identity_anchor=anchor, bound_at=now)
            return wallet
    except IntegrityError as exc:
        if violates(exc, "credits_agentwallet_identity_anchor_uniq") or violates(
            exc, "credits_agentwalletanchor_live_uniq"
        ):
            raise IdentityAnchorTaken("this identity anchor already backs another wallet") from None
        raise


def agent_wallet_anchor_rotate(*, wallet_id: int, identity_anchor: str, actor: str, now: datetime) -> AgentWallet:
    """Bind a new identity anchor to a wallet; the old binding is kept in the history (unbound_at)."""
    anchor = _check_anchor(identity_anchor)
    assert anchor is not None
    try:
        with transaction.atomic(durable=True):
            wallet = AgentWallet.objects.select_for_update().get(pk=wallet_id)
            previous = wallet.identity_anchor
            AgentWalletAnchor.objects.filter(wallet=wallet, unbound_at__isnull=True).update(unbound_at=now)
            AgentWallet.objects.filter(pk=wallet_id).update(identity_anchor=anchor)
            AgentWalletAnchor.objects.create(wallet=wallet, identity_anchor=anchor, bound_at=now, actor=actor)
            audit_append(
                event_type="agent_wallet_anchor_rotated",
                payload={"wallet_id": wallet_id, "from": previous, "to": anchor},
                correlation_id=f"agent_wallet:{wallet_id}",
                now=now,
                account_id=wallet.account_id,
                actor=actor,
            )
    except IntegrityError as exc:
        if violates(exc, "credits_agentwallet_identity_anchor_uniq") or violates(
            exc, "credits_agentwalletanchor_live_uniq"
        ):
            raise IdentityAnchorTaken("this identity anchor already backs another wallet") from None
        raise
    wallet.refresh_from_db()
    return wallet


# --- card purchases of credit packs (arrive through webhooks) -------------------------

CARD_PACKS = {500, 1000, 2500}  # credit units


def card_credit_pack_mint(*, provider: str, payment_id: str, custom_data: dict[str, Any], now: datetime) -> str:
    """Mint a pack paid by card, once per provider payment; runs in the webhook's transaction."""
    try:
        account_id = int(str(custom_data.get("account_id")))
        pack_size = int(str(custom_data.get("pack_size")))
    except ValueError:
        raise InvalidRequest("credit_pack needs account_id and pack_size", reason="invalid_custom_data") from None
    if pack_size not in CARD_PACKS:
        raise InvalidRequest(f"pack_size must be one of {sorted(CARD_PACKS)}", reason="invalid_pack_size")
    minted = account_credit_mint_in_transaction(
        account_id=account_id,
        amount=cu_to_micro_usd(pack_size, rounding=Rounding.FLOOR),
        idempotency_key=f"card:{provider}:{payment_id}",
        correlation_id=payment_id,
        now=now,
        actor=provider,
        reason=f"credit pack {pack_size} CU (card)",
    )
    return "applied" if minted else "already_recorded"
