"""The one client of the x402 facilitator (``/verify`` then ``/settle``), behind a breaker.

Never called inside a database transaction. A facilitator that is down,
slow or answering garbage counts as a breaker failure; one that refuses a
payment (``isValid: false`` / ``success: false``) answered correctly and does not.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import httpx
from django.conf import settings

from finn.breaker import CircuitBreaker
from finn.registry import breaker_register
from finn.untrusted_json import json_loads_untrusted

logger = logging.getLogger(__name__)
_TX_HASH = re.compile(r"^0x[0-9a-fA-F]{64}$")


@breaker_register("settlement")
def settlement_breaker() -> CircuitBreaker:
    return CircuitBreaker(
        name="settlement",
        failure_threshold=settings.X402_BREAKER_THRESHOLD,
        window_seconds=settings.X402_BREAKER_WINDOW_SECONDS,
        cooldown_seconds=settings.X402_BREAKER_COOLDOWN_SECONDS,
    )


@dataclass(frozen=True)
class SettleOutcome:
    """``settled`` with a tx hash; or refused (``reason``); or ``unavailable`` (``/settle`` was not sent:
    nothing moved); or ``unknown`` (``/settle`` was sent and its answer is lost, garbage, a 5xx, or the
    facilitator's own ``settlement_pending``: funds may have moved; ``tx_hash`` when it named one)."""

    settled: bool
    tx_hash: str = ""
    reason: str = ""
    unavailable: bool = False
    unknown: bool = False


# The facilitator broadcast a transaction and could not confirm it (x402's ERR_SETTLEMENT_PENDING).
FACILITATOR_PENDING = "settlement_pending"


class _Garbage(Exception):
    pass


def _post(path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(
        f"{settings.X402_FACILITATOR_URL}{path}", json=body, timeout=settings.X402_FACILITATOR_TIMEOUT_SECONDS
    )
    if response.status_code != 200:
        raise _Garbage(f"{path}: http {response.status_code}")
    try:
        data = json_loads_untrusted(response.content)
    except ValueError:
        raise _Garbage(f"{path}: not JSON") from None
    if not isinstance(data, dict):
        raise _Garbage(f"{path}: not an object")
    return data


def settle(*, x402_version: int, payment_payload: dict[str, Any], requirements: dict[str, Any]) -> SettleOutcome:
    """Verify, then settle one payment with the facilitator."""
    if not settings.X402_FACILITATOR_URL:
        return SettleOutcome(settled=False, reason="no facilitator configured", unavailable=True)
    breaker = settlement_breaker()
    admission = breaker.allow()
    if not admission.allowed:
        return SettleOutcome(settled=False, reason="facilitator circuit open", unavailable=True)
    body = {"x402Version": x402_version, "paymentPayload": payment_payload, "paymentRequirements": requirements}
    sent_settle = False
    try:
        verified = _post("/verify", body)
        if not isinstance(verified.get("isValid"), bool):
            raise _Garbage("/verify: no isValid")
        if not verified["isValid"]:
            breaker.record_success()
            return SettleOutcome(settled=False, reason=str(verified.get("invalidReason") or "invalid")[:200])
        sent_settle = True
        try:
            settled = _post("/settle", body)
        except httpx.ConnectError:
            sent_settle = False  # the connection was refused: the request never left
            raise
        if not isinstance(settled.get("success"), bool):
            raise _Garbage("/settle: no success")
        if not settled["success"]:
            breaker.record_success()
            reason = str(settled.get("errorReason") or "settlement refused")[:200]
            if reason == FACILITATOR_PENDING:
                return SettleOutcome(settled=False, reason=reason, unknown=True, tx_hash=_tx(settled))
            return SettleOutcome(settled=False, reason=reason)
        tx_hash = _tx(settled)
        if not tx_hash:
            raise _Garbage("/settle: success without a transaction hash")
    except (httpx.HTTPError, _Garbage) as exc:
        state = breaker.record_failure()
        logger.warning("x402 facilitator error", extra={"error": f"{type(exc).__name__}: {exc}"[:200], "state": state})
        reason = f"facilitator error: {type(exc).__name__}"
        if sent_settle:  # the facilitator may have broadcast the transfer: the outcome is unknown
            return SettleOutcome(settled=False, reason=reason, unknown=True)
        return SettleOutcome(settled=False, reason=reason, unavailable=True)
    breaker.record_success()
    return SettleOutcome(settled=True, tx_hash=tx_hash)


def verify(*, x402_version: int, payment_payload: dict[str, Any], requirements: dict[str, Any]) -> SettleOutcome:
    """``/verify`` alone (upto checks the permit before the work): ``settled`` here means "valid"."""
    if not settings.X402_FACILITATOR_URL:
        return SettleOutcome(settled=False, reason="no facilitator configured", unavailable=True)
    breaker = settlement_breaker()
    if not breaker.allow().allowed:
        return SettleOutcome(settled=False, reason="facilitator circuit open", unavailable=True)
    body = {"x402Version": x402_version, "paymentPayload": payment_payload, "paymentRequirements": requirements}
    try:
        verified = _post("/verify", body)
        if not isinstance(verified.get("isValid"), bool):
            raise _Garbage("/verify: no isValid")
    except (httpx.HTTPError, _Garbage) as exc:
        breaker.record_failure()
        return SettleOutcome(settled=False, reason=f"facilitator error: {type(exc).__name__}", unavailable=True)
    breaker.record_success()
    if not verified["isValid"]:
        return SettleOutcome(settled=False, reason=str(verified.get("invalidReason") or "invalid")[:200])
    return SettleOutcome(settled=True)


def _tx(answer: dict[str, Any]) -> str:
    tx_hash = answer.get("transaction")
    return tx_hash.lower() if isinstance(tx_hash, str) and _TX_HASH.match(tx_hash) else ""
