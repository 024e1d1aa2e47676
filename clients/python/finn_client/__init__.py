"""finn's Python client: ``Finn(base_url, api_key)``, ``finn.hold(...)``, typed errors."""

from finn_client.client import Balance, Entry, Finn, Hold, Result
from finn_client.errors import (
    AccountFrozen,
    AuthenticationFailed,
    Conflict,
    DailyCapExceeded,
    EntryNotFound,
    ExceedsHold,
    FinnError,
    HoldExpired,
    IdempotencyMismatch,
    InsufficientFunds,
    InvalidRequest,
    InvalidTransition,
    NotFound,
    OutcomeUnknown,
    PaymentRequired,
    PermissionDenied,
    RateLimited,
    RequestInProgress,
    Unavailable,
)

__all__ = [
    "AccountFrozen", "AuthenticationFailed", "Balance", "Conflict", "DailyCapExceeded", "Entry", "EntryNotFound",
    "ExceedsHold", "Finn", "FinnError", "Hold", "HoldExpired", "IdempotencyMismatch", "InsufficientFunds",
    "InvalidRequest", "InvalidTransition", "NotFound", "OutcomeUnknown", "PaymentRequired", "PermissionDenied",
    "RateLimited", "RequestInProgress", "Result", "Unavailable",
]  # fmt: skip
