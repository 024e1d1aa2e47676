"""The credits app's refusals: each a DomainError with a stable code and HTTP status.

Grouped by flow: x402 payments, credit packs, pricing, agent wallets, sign-in. The one
exception handler (``finn.errors.api_exception_handler``) renders them.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings

from finn.errors import Conflict, DomainError, Forbidden, InvalidRequest
from finn.flags import FeatureDisabled

logger = logging.getLogger("credits.signin")


class PaymentRefused(DomainError):
    """A 402 with a specific code; nothing was written."""

    status = 402


def _refusal(code: str) -> type[PaymentRefused]:
    return type(f"Refused_{code}", (PaymentRefused,), {"code": code})


REFUSALS: dict[str, type[PaymentRefused]] = {
    code: _refusal(code)
    for code in (
        "quote_not_found",
        "invalid_chain",
        "invalid_token",
        "invalid_recipient",
        "insufficient_payment",
        "payment_exceeds_ceiling",
        "payment_too_small",
        "authorization_not_yet_valid",
        "authorization_expired",
        "invalid_signature",
        "nonce_reused",
        "settlement_failed",
        "credit_note_cap_exceeded",
    )
}


def refuse(code: str, message: str, **extra: Any) -> PaymentRefused:
    return REFUSALS[code](message, **extra)


class InvalidPayment(InvalidRequest):
    code = "invalid_payment"


class VerificationQueueFull(DomainError):
    code = "verification_queue_full"
    status = 503

    def __init__(self) -> None:
        super().__init__("too many payments are being verified; retry shortly")
        self.headers["Retry-After"] = "1"


class SettlementUnavailable(DomainError):
    code = "settlement_unavailable"
    status = 503

    def __init__(self, message: str = "payment settlement is unavailable; retry later") -> None:
        super().__init__(message)
        self.headers["Retry-After"] = "30"


class InvalidPackSize(InvalidRequest):
    code = "invalid_pack_size"


class InvalidProof(InvalidRequest):
    code = "invalid_proof"


class PaymentNotConfirmed(DomainError):
    code = "payment_not_confirmed"
    status = 402


class PaymentMismatch(Conflict):
    code = "payment_mismatch"


class AlreadyMinted(Conflict):
    code = "already_minted"


class SenderMismatch(Forbidden):
    code = "sender_mismatch"


class VerificationUnavailable(DomainError):
    code = "verification_unavailable"
    status = 503


class PaymentsNotConfigured(FeatureDisabled):
    """Credit packs without a treasury or RPC endpoints: a feature this server does not offer (404)."""


class UnknownModel(InvalidRequest):
    code = "unknown_model"


class IdentityAnchorTaken(Conflict):
    """The anchor already backs another wallet (a second binding would be an impersonation)."""

    code = "identity_anchor_taken"


class SettlementInProgress(Conflict):
    code = "settlement_in_progress"

    def __init__(self) -> None:
        super().__init__("this payment is being settled; retry shortly")
        self.headers["Retry-After"] = "2"


class SettlementPending(Conflict):
    """The facilitator was asked to settle and its answer was lost: the funds may have moved.

    Never a 402 (a 402 would make a well-behaved client sign and pay again): present the same
    payment again after Retry-After; finn resolves the outcome meanwhile.
    """

    code = "settlement_pending"

    def __init__(self, payment_id: str) -> None:
        super().__init__(
            "the settlement's outcome is not known yet; present the same payment again (do not pay again)",
            payment_id=payment_id,
        )
        self.headers["Retry-After"] = str(max(1, settings.X402_RESOLVE_LEASE_SECONDS))


class SignInFailed(DomainError):
    """One answer for every failed sign-in, whatever the reason."""

    code = "authentication_failed"
    status = 401

    def __init__(self, reason: str) -> None:
        super().__init__("authentication failed")
        self.reason = reason
        logger.info("sign-in refused", extra={"reason": reason})
