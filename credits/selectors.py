"""Reads of the credits app."""

from __future__ import annotations

from datetime import datetime

from django.db.models import Sum

from credits.models import CreditNote


def wallet_credit_balance(*, wallet: str, now: datetime) -> int:
    """µUSDC of a wallet's credit notes that are not yet expired (Postgres is the truth)."""
    total = (
        CreditNote.objects.filter(wallet=wallet.lower(), expires_at__gt=now, expired_at__isnull=True)
        .aggregate(total=Sum("remaining"))
        .get("total")
    )
    return int(total or 0)
