"""What the chain says of one EIP-3009 authorization (read-only, through the one JSON-RPC client).

Used only to settle the question of a settlement whose answer was lost: was the authorization
used (``authorizationState(authorizer, nonce)`` on the token contract), in which transaction
(its ``AuthorizationUsed`` log), and did that transaction move ``value`` from the payer to
``payTo`` (its ``Transfer`` log)? ``None`` means the chain could not be asked.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from eth_utils import keccak
from x402.mechanisms.evm.constants import PERMIT2_ADDRESS

from credits.chain import RpcUnavailable, rpc_call

AUTHORIZATION_STATE = "0x" + keccak(text="authorizationState(address,bytes32)")[:4].hex()
NONCE_BITMAP = "0x" + keccak(text="nonceBitmap(address,uint256)")[:4].hex()  # Permit2 (upto)
AUTHORIZATION_USED = "0x" + keccak(text="AuthorizationUsed(address,bytes32)").hex()
TRANSFER = "0x" + keccak(text="Transfer(address,address,uint256)").hex()
SECONDS_PER_BLOCK_FLOOR = 1  # Base makes a block every 2 s; search back as if it made one a second


def _word(address: str) -> str:
    return "0x" + address.lower().removeprefix("0x").rjust(64, "0")


def _call(method: str, params: list[Any]) -> Any:
    return rpc_call(settings.X402_RPC_URL, method, params, timeout=settings.X402_FACILITATOR_TIMEOUT_SECONDS)


def authorization_used(*, asset: str, payer: str, nonce: str) -> bool | None:
    data = AUTHORIZATION_STATE + _word(payer)[2:] + nonce.removeprefix("0x").rjust(64, "0")
    try:
        result = _call("eth_call", [{"to": asset, "data": data}, "latest"])
    except RpcUnavailable:
        return None
    if not isinstance(result, str) or not result.startswith("0x") or len(result) != 66:
        return None
    return int(result, 16) != 0


def permit2_nonce_used(*, payer: str, nonce: str) -> bool | None:
    """Permit2's unordered nonces: bit ``nonce & 255`` of word ``nonce >> 8`` of the owner's bitmap."""
    value = int(nonce, 16)
    data = NONCE_BITMAP + _word(payer)[2:] + f"{value >> 8:064x}"
    try:
        result = _call("eth_call", [{"to": PERMIT2_ADDRESS, "data": data}, "latest"])
    except RpcUnavailable:
        return None
    if not isinstance(result, str) or not result.startswith("0x") or len(result) != 66:
        return None
    return bool((int(result, 16) >> (value & 255)) & 1)


def transfer_transaction(*, asset: str, payer: str, pay_to: str, value: int, age_seconds: float) -> str | None:
    """A transaction since the payment that moved exactly ``value`` from ``payer`` to ``pay_to`` (upto)."""
    for log in _recent_logs(asset, [TRANSFER, _word(payer), _word(pay_to)], age_seconds):
        try:
            if int(str(log.get("data")), 16) == value:
                return str(log["transactionHash"]).lower()
        except (KeyError, ValueError):
            continue
    return None


def _recent_logs(asset: str, topics: list[str], age_seconds: float) -> list[dict[str, Any]]:
    """``asset``'s logs with ``topics`` since about ``age_seconds`` ago (nodes bound a log query's range)."""
    try:
        latest = int(str(_call("eth_blockNumber", [])), 16)
        start = max(0, latest - int(age_seconds / SECONDS_PER_BLOCK_FLOOR) - 600)
        logs = _call(
            "eth_getLogs", [{"address": asset, "fromBlock": hex(start), "toBlock": "latest", "topics": topics}]
        )
    except (RpcUnavailable, ValueError):
        return []
    return [log for log in logs if isinstance(log, dict)] if isinstance(logs, list) else []


def authorization_transaction(*, asset: str, payer: str, nonce: str, age_seconds: float) -> str | None:
    """The transaction that used the authorization, from its AuthorizationUsed log (None: not found)."""
    for log in _recent_logs(asset, [AUTHORIZATION_USED, _word(payer), nonce.lower()], age_seconds):
        tx = log.get("transactionHash")
        if isinstance(tx, str) and len(tx) == 66:
            return tx.lower()
    return None


def transfer_matches(*, tx_hash: str, asset: str, payer: str, pay_to: str, value: int) -> bool | None:
    """Whether ``tx_hash`` moved exactly ``value`` of ``asset`` from ``payer`` to ``pay_to``."""
    try:
        receipt = _call("eth_getTransactionReceipt", [tx_hash])
    except RpcUnavailable:
        return None
    if not isinstance(receipt, dict) or receipt.get("status") not in ("0x1", 1):
        return False if isinstance(receipt, dict) else None
    for log in receipt.get("logs") or []:
        if not isinstance(log, dict) or str(log.get("address", "")).lower() != asset.lower():
            continue
        topics = [str(t).lower() for t in log.get("topics") or []]
        if topics[:3] == [TRANSFER, _word(payer), _word(pay_to)]:
            try:
                return int(str(log.get("data")), 16) == value
            except ValueError:
                return False
    return False
