"""Frozen results the billing services return (and selectors reuse)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from billing.models import BillingEntry


@dataclass(frozen=True)
class Balance:
    account_id: int
    available: int
    held: int
    version: int
    daily_cap: int | None = None  # agent accounts only
    refill_threshold: int | None = None


@dataclass(frozen=True)
class EntryResult:
    entry: BillingEntry
    balance: Balance
    replayed: bool = False
    audit_sequence: int | None = None  # commit: the sequence of its billing_commit audit row


@dataclass(frozen=True)
class MintResult:
    journal_entry_id: int
    balance: Balance
    replayed: bool = False


@dataclass(frozen=True)
class PurchaseResult:
    """A boost or badge paid from prepaid credit."""

    kind: str  # "boost" | "badge"
    payment_id: str  # "credit:<journal entry id>"
    journal_entry_id: int
    amount: int  # µUSD charged
    balance: Balance
    expires_at: datetime | None = None  # boosts only
    replayed: bool = False


@dataclass(frozen=True)
class Metering:
    """What a metered reserve was priced at (credits computes it; billing records it)."""

    model: str
    price_version: int
    input_tokens: int
    max_output_tokens: int

    def audit(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "price_version": str(self.price_version),
            "reserved_tokens": {"input_tokens": self.input_tokens, "max_output_tokens": self.max_output_tokens},
        }


@dataclass(frozen=True)
class Usage:
    """The tokens a metered entry was charged for."""

    input_tokens: int
    output_tokens: int
