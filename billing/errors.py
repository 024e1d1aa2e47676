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


class HoldExpired(Conflict):
    """The hold's ``expires_at`` has passed: it can never be committed."""

    code = "hold_expired"


class FenceStale(Conflict):
    """A locked writer's fencing token is not newer than the row's: refused."""

    code = "fencing_stale"


class FinalizeBacklog(DomainError):
    """Too much of the account's spend is not yet finalized upstream."""

    code = "finalize_backlog"
    status = 402


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


class DailyCapExceeded(DomainError):
    """An agent wallet's spend today plus open holds would pass its daily cap."""

    code = "daily_cap_exceeded"
    status = 402


class AccountFrozen(DomainError):
    """New reserves are frozen (a reverted on-chain payment under review)."""

    code = "account_frozen"
    status = 403


class AlreadyPurchased(Conflict):
    """One badge per member: a second purchase is refused before any charge."""

    code = "already_purchased"


class PurchaseInProgress(Conflict):
    """Another purchase for this member holds the distributed lock."""

    code = "purchase_in_progress"

    def __init__(self, message: str, **extra: object) -> None:
        super().__init__(message, **extra)
        self.headers["Retry-After"] = "1"


class BudgetPolicyExceeded(DomainError):
    """An agent's budget policy refuses this reserve or extend; ``rule`` names which, ``resets_at`` when it frees."""

    code = "budget_policy_exceeded"
    status = 402


class BudgetPolicyRateLimited(BudgetPolicyExceeded):
    """The agent's requests per rolling hour are used up (429 with Retry-After)."""

    status = 429
