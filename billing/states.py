"""Billing entry states and the one table of allowed transitions.

The same table is enforced three times: by the services (a typed error), by
the compare-and-set UPDATE they issue (``state`` in the allowed sources), and
by a PostgreSQL trigger on the entries table (migration 0002), so that even a
stray raw UPDATE cannot move an entry along an edge that is not listed here.
"""

from __future__ import annotations

from django.db import models


class EntryState(models.TextChoices):
    IDLE = "IDLE"
    RESERVE_HELD = "RESERVE_HELD"
    COMMITTED = "COMMITTED"
    FINALIZE_PENDING = "FINALIZE_PENDING"
    FINALIZE_ACKED = "FINALIZE_ACKED"
    FINALIZE_FAILED = "FINALIZE_FAILED"
    RELEASED = "RELEASED"
    VOIDED = "VOIDED"


TRANSITIONS: dict[EntryState, frozenset[EntryState]] = {
    EntryState.IDLE: frozenset({EntryState.RESERVE_HELD}),
    EntryState.RESERVE_HELD: frozenset({EntryState.COMMITTED, EntryState.RELEASED}),
    EntryState.COMMITTED: frozenset({EntryState.FINALIZE_PENDING, EntryState.VOIDED}),
    EntryState.FINALIZE_PENDING: frozenset({EntryState.FINALIZE_ACKED, EntryState.FINALIZE_FAILED}),
    EntryState.FINALIZE_FAILED: frozenset({EntryState.FINALIZE_ACKED, EntryState.VOIDED}),
    EntryState.FINALIZE_ACKED: frozenset(),
    EntryState.RELEASED: frozenset(),
    EntryState.VOIDED: frozenset(),
}

TERMINAL_STATES = frozenset(state for state, targets in TRANSITIONS.items() if not targets)

# States in which the actual cost is known (set at commit, never changed).
CHARGED_STATES = frozenset(
    {
        EntryState.COMMITTED,
        EntryState.FINALIZE_PENDING,
        EntryState.FINALIZE_ACKED,
        EntryState.FINALIZE_FAILED,
        EntryState.VOIDED,
    }
)


def sources_of(target: EntryState) -> frozenset[EntryState]:
    """Every state from which ``target`` may be entered."""
    return frozenset(source for source, targets in TRANSITIONS.items() if target in targets)


def is_allowed(current: str, target: str) -> bool:
    return EntryState(target) in TRANSITIONS[EntryState(current)]


class ReleaseReason(models.TextChoices):
    PRE_STREAM_FAILURE = "pre_stream_failure"
    RESERVE_EXPIRED = "reserve_expired"
    USER_CANCEL = "user_cancel"
