"""Small database helpers shared by the apps."""

from __future__ import annotations

from django.db import IntegrityError


def violates(exc: IntegrityError, constraint: str) -> bool:
    """Whether ``exc`` was raised by the named constraint (read from the driver).

    Used to turn a unique violation into "return the first result" without
    matching on message text.
    """
    diag = getattr(exc.__cause__, "diag", None)
    return getattr(diag, "constraint_name", None) == constraint
