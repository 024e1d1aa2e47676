"""Credit packs paid in USDC on chain: verify, dedupe forever, mint; re-check for reorgs.

Verification happens before any transaction (JSON-RPC is slow); the mint and
the purchase row are one durable transaction. The (chain, tx hash, log index)
of a transfer is a unique column, so a second claim of the same payment
returns the first result (same account) or 409 ``already_minted``.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction

from billing.results import Balance
from billing.selectors import account_balance
from billing.services import account_reserves_freeze, credit_mint_from_usdc
from billing.units import Rounding, micro_usdc_to_micro_usd
from credits.chain import RpcUnavailable, rpc_call
from credits.errors import (
    AlreadyMinted,
    InvalidPackSize,
    InvalidProof,
    PaymentMismatch,
    PaymentNotConfirmed,
    PaymentsNotConfigured,
    SenderMismatch,
    VerificationUnavailable,
)
from credits.models import CreditPurchase
from finn.audit import audit_append
from finn.validators import is_eth_address

logger = logging.getLogger(__name__)

PACKS = {500: 5_000_000, 1000: 10_000_000, 2500: 25_000_000}  # credit units -> µUSDC
TRANSFER_TOPIC = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
_TX_HASH = re.compile(r"^0x[0-9a-f]{64}$")


@dataclass(frozen=True)
class PurchaseResult:
    purchase: CreditPurchase
    balance: Balance
    replayed: bool = False


def _topic_address(topic: str) -> str:
    return "0x" + topic[-40:].lower()


def _receipt(url: str, tx_hash: str) -> dict[str, Any] | None:
    try:
        result = rpc_call(url, "eth_getTransactionReceipt", [tx_hash])
    except RpcUnavailable:
        raise VerificationUnavailable("the payment could not be verified right now; retry later") from None
    if result is not None and not isinstance(result, dict):
        raise VerificationUnavailable("the payment could not be verified right now; retry later")
    return result


def _find_transfer(receipt: dict[str, Any], *, sender: str, amount: int) -> tuple[int, dict[str, Any]]:
    for log in receipt.get("logs") or []:
        topics = [str(t).lower() for t in log.get("topics") or []]
        if (
            str(log.get("address", "")).lower() == settings.USDC_ADDRESS
            and len(topics) == 3
            and topics[0] == TRANSFER_TOPIC
            and _topic_address(topics[1]) == sender
            and _topic_address(topics[2]) == settings.TREASURY_ADDRESS
        ):
            try:
                value = int(str(log.get("data", "0x0")), 16)
            except ValueError:
                continue
            if value == amount:
                return int(str(log.get("logIndex", "0x0")), 16), log
    raise PaymentMismatch("no USDC transfer of the pack's amount from the sender to the treasury in this transaction")


def _validate_proof(proof: dict[str, Any], *, wallets: set[str], amount: int) -> tuple[str, str]:
    tx_hash = str(proof.get("tx_hash", "")).lower()
    sender = str(proof.get("sender", "")).lower()
    if not _TX_HASH.match(tx_hash) or not is_eth_address(sender):
        raise InvalidProof("tx_hash and sender must be 0x-prefixed hex")
    if proof.get("chain_id") != settings.PAYMENT_CHAIN_ID:
        raise InvalidProof(f"payments are accepted on chain {settings.PAYMENT_CHAIN_ID} only")
    if str(proof.get("token", "")).lower() != settings.USDC_ADDRESS:
        raise InvalidProof("the token must be USDC")
    if sender not in wallets:
        raise SenderMismatch("the payment was not sent by a wallet of this account")
    if proof.get("amount_micro_usdc") != amount:
        raise PaymentMismatch("the amount does not match the pack")
    return tx_hash, sender


def purchase_credit_pack(
    *, account_id: int, wallets: set[str], pack_size: int, proof: dict[str, Any], idempotency_key: str, now: datetime
) -> PurchaseResult:
    """Verify an on-chain USDC payment for a pack and credit the account once."""
    if not settings.TREASURY_ADDRESS or not settings.RPC_PRIMARY_URL or not settings.RPC_FALLBACK_URL:
        raise PaymentsNotConfigured("credit pack purchases are not configured on this server")
    amount = PACKS.get(pack_size) if isinstance(pack_size, int) and not isinstance(pack_size, bool) else None
    if amount is None:
        raise InvalidPackSize(f"pack_size must be one of {sorted(PACKS)}")
    tx_hash, sender = _validate_proof(proof, wallets={w.lower() for w in wallets}, amount=amount)
    first = CreditPurchase.objects.filter(chain_id=settings.PAYMENT_CHAIN_ID, tx_hash=tx_hash).first()
    if first is not None:
        return _replay(first, account_id)
    receipt = _receipt(settings.RPC_PRIMARY_URL, tx_hash)
    if receipt is None:
        raise PaymentNotConfirmed("the transaction is not mined yet", confirmations=0)
    if str(receipt.get("status")) != "0x1":
        raise InvalidProof("the transaction failed on chain")
    log_index, _ = _find_transfer(receipt, sender=sender, amount=amount)
    backup = _receipt(settings.RPC_FALLBACK_URL, tx_hash)
    if backup is None or str(backup.get("blockHash", "")).lower() != str(receipt.get("blockHash", "")).lower():
        raise VerificationUnavailable("the RPC nodes disagree about this payment; retry later")
    block_number = int(str(receipt["blockNumber"]), 16)
    try:
        latest = int(str(rpc_call(settings.RPC_PRIMARY_URL, "eth_blockNumber", [])), 16)
    except (RpcUnavailable, ValueError):
        raise VerificationUnavailable("the payment could not be verified right now; retry later") from None
    confirmations = latest - block_number + 1
    if confirmations < settings.PAYMENT_MIN_CONFIRMATIONS:
        raise PaymentNotConfirmed(
            f"{confirmations} of {settings.PAYMENT_MIN_CONFIRMATIONS} confirmations", confirmations=confirmations
        )
    usd_per_usdc = settings.USD_USDC_RATE
    try:
        with transaction.atomic(durable=True):
            mint = credit_mint_from_usdc(
                account_id=account_id,
                amount_micro_usdc=amount,
                usd_per_usdc=usd_per_usdc,
                idempotency_key=f"purchase:{settings.PAYMENT_CHAIN_ID}:{tx_hash}:{log_index}",
                correlation_id=idempotency_key,
                now=now,
                actor=sender,
                reason=f"credit pack {pack_size} CU",
                details={"tx_hash": tx_hash, "log_index": log_index, "block_hash": str(receipt["blockHash"]).lower()},
            )
            purchase = CreditPurchase.objects.create(
                account_id=account_id,
                chain_id=settings.PAYMENT_CHAIN_ID,
                tx_hash=tx_hash,
                log_index=log_index,
                block_number=block_number,
                block_hash=str(receipt["blockHash"]).lower(),
                sender=sender,
                pack_size=pack_size,
                amount_micro_usdc=amount,
                credited_micro_usd=micro_usdc_to_micro_usd(amount, rounding=Rounding.FLOOR, usd_per_usdc=usd_per_usdc),
                journal_entry_id=mint.journal_entry_id,
                idempotency_key=idempotency_key,
                created_at=now,
            )
    except IntegrityError:  # a concurrent claim of the same transfer won
        first = CreditPurchase.objects.filter(chain_id=settings.PAYMENT_CHAIN_ID, tx_hash=tx_hash).first()
        if first is None:
            raise
        return _replay(first, account_id)
    return PurchaseResult(purchase=purchase, balance=mint.balance)


def _replay(first: CreditPurchase, account_id: int) -> PurchaseResult:
    if first.account_id != account_id:
        raise AlreadyMinted("this payment already credited another account")
    return PurchaseResult(purchase=first, balance=account_balance(account_id=account_id), replayed=True)


def purchase_reorg_check(*, now: datetime, window: timedelta = timedelta(hours=1)) -> dict[str, int]:
    """Re-check recent mints against the chain; a reverted one freezes the account's reserves."""
    counts: Counter[str] = Counter()
    recent = CreditPurchase.objects.filter(
        status__in=[CreditPurchase.Status.MINTED, CreditPurchase.Status.REVALIDATED], created_at__gte=now - window
    ).order_by("created_at")
    for purchase in recent:
        counts["checked"] += 1
        try:
            block = rpc_call(settings.RPC_PRIMARY_URL, "eth_getBlockByNumber", [hex(purchase.block_number), False])
        except RpcUnavailable:
            counts["errors"] += 1
            continue
        if isinstance(block, dict) and str(block.get("hash", "")).lower() == purchase.block_hash:
            CreditPurchase.objects.filter(pk=purchase.pk).update(checked_at=now)
            continue
        counts["reorgs"] += 1
        _settle_reorg(purchase, now=now, counts=counts)
    return dict(counts)


def _settle_reorg(purchase: CreditPurchase, *, now: datetime, counts: Counter[str]) -> None:
    try:
        primary = _receipt(settings.RPC_PRIMARY_URL, purchase.tx_hash)
        backup = _receipt(settings.RPC_FALLBACK_URL, purchase.tx_hash)
    except VerificationUnavailable:
        counts["errors"] += 1
        return
    still_valid = False
    if primary is not None and backup is not None and str(primary.get("status")) == "0x1":
        same_block = str(primary.get("blockHash", "")).lower() == str(backup.get("blockHash", "")).lower()
        try:
            _find_transfer(primary, sender=purchase.sender, amount=purchase.amount_micro_usdc)
            still_valid = same_block
        except PaymentMismatch:
            still_valid = False
    event = "credit_mint_revalidated" if still_valid else "credit_mint_reverted"
    with transaction.atomic(durable=True):
        updated = CreditPurchase.objects.filter(pk=purchase.pk, status=purchase.status).update(
            status=CreditPurchase.Status.REVALIDATED if still_valid else CreditPurchase.Status.REVERTED,
            block_hash=str(primary["blockHash"]).lower() if still_valid and primary else purchase.block_hash,
            block_number=int(str(primary["blockNumber"]), 16) if still_valid and primary else purchase.block_number,
            checked_at=now,
        )
        if updated:
            audit_append(
                event_type=event,
                payload={
                    "account_id": str(purchase.account_id),
                    "tx_hash": purchase.tx_hash,
                    "log_index": purchase.log_index,
                    "credited_micro_usd": str(purchase.credited_micro_usd),
                },
                correlation_id=purchase.idempotency_key,
                now=now,
                account_id=purchase.account_id,
                actor="reorg_check",
            )
    if updated and not still_valid:
        counts["reverted"] += 1
        account_reserves_freeze(
            account_id=purchase.account_id,
            reason=f"payment {purchase.tx_hash} reverted on chain",
            actor="reorg_check",
            now=now,
        )
        logger.critical("credit mint reverted by a chain reorganisation", extra={"tx_hash": purchase.tx_hash})
