"""Typed refusals of the billing services (code + HTTP status)."""

from __future__ import annotations

from finn.errors import Conflict, DomainError, InvalidRequest, NotFound


class InsufficientFunds(DomainError):
    code = "insufficient_funds"
    status = 402


class InvalidTransition(Conflict):
    """The entry is not in a state from which ``target`` may be entered."""

    code = "invalid_transition"

    def __init__(self, current: str, target: str) -> None:
        super().__init__(
            f"cannot move billing entry from {current} to {target}",
            current_state=current,
            target_state=target,
        )
        self.current = current
        self.target = target


class ExceedsHold(Conflict):
    code = "exceeds_hold"


class ReserveExpired(Conflict):
    code = "reserve_expired"


class EntryNotFound(NotFound):
    code = "entry_not_found"


class AccountNotFound(NotFound):
    code = "account_not_found"


class InvalidEntryId(InvalidRequest):
    code = "invalid_entry_id"


class IdempotencyKeyReused(DomainError):
    """The same idempotency key was used before with a different request."""

    code = "idempotency_mismatch"
    status = 422
