"""The authenticated caller of the API, whatever authenticated it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Principal:
    """An API caller: the account its key belongs to, and staff or not."""

    account_id: int
    api_key_id: int
    is_staff: bool = False
    actor: str = ""

    # DRF and Django check these on request.user.
    is_authenticated: bool = True
    is_anonymous: bool = False
