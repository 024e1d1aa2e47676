"""Typed exceptions, one per finn error code (``{"error", "code"}`` answers)."""

from __future__ import annotations

from typing import Any


class FinnError(Exception):
    """An answer finn gave with an error code (or a transport failure that outlived the retries)."""

    code = "error"

    def __init__(self, message: str, *, status: int = 0, code: str | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code or self.code
        self.body = body if body is not None else {}


class PaymentRequired(FinnError):
    """402: the hold or charge cannot be covered."""


class InsufficientFunds(PaymentRequired):
    code = "insufficient_funds"


class DailyCapExceeded(PaymentRequired):
    code = "daily_cap_exceeded"


class AccountFrozen(PaymentRequired):
    code = "account_frozen"


class InvalidRequest(FinnError):
    code = "invalid_request"


class AuthenticationFailed(FinnError):
    code = "authentication_failed"


class PermissionDenied(FinnError):
    code = "permission_denied"


class NotFound(FinnError):
    code = "not_found"


class EntryNotFound(NotFound):
    code = "entry_not_found"


class Conflict(FinnError):
    """409: the entry is not in a state that allows this."""

    code = "conflict"


class InvalidTransition(Conflict):
    code = "invalid_transition"


class ExceedsHold(Conflict):
    code = "exceeds_hold"


class HoldExpired(Conflict):
    code = "hold_expired"


class IdempotencyMismatch(Conflict):
    code = "idempotency_mismatch"


class RequestInProgress(Conflict):
    """The same Idempotency-Key is still running (retried by the client)."""

    code = "request_in_progress"


class RateLimited(FinnError):
    code = "rate_limited"


class Unavailable(FinnError):
    """503 (retried by the client), or a connection that failed on every try."""

    code = "unavailable"


class OutcomeUnknown(FinnError):
    """Every try failed in transit: finn may or may not have applied the request."""

    code = "outcome_unknown"


BY_CODE: dict[str, type[FinnError]] = {
    cls.code: cls
    for cls in (
        InsufficientFunds, DailyCapExceeded, AccountFrozen, InvalidRequest, AuthenticationFailed, PermissionDenied,
        NotFound, EntryNotFound, InvalidTransition, ExceedsHold, HoldExpired, IdempotencyMismatch, RequestInProgress,
        RateLimited, Conflict,
    )
}  # fmt: skip
BY_STATUS: dict[int, type[FinnError]] = {
    400: InvalidRequest, 401: AuthenticationFailed, 402: PaymentRequired, 403: PermissionDenied, 404: NotFound,
    409: Conflict, 429: RateLimited, 503: Unavailable,
}  # fmt: skip


def error_from(status: int, body: Any) -> FinnError:
    """The most specific exception for an error answer."""
    code = body.get("code") if isinstance(body, dict) else None
    message = body.get("error") if isinstance(body, dict) else None
    cls = BY_CODE.get(str(code)) or BY_STATUS.get(status) or FinnError
    return cls(str(message or f"HTTP {status}"), status=status, code=str(code) if code else None, body=body)
