"""Billing entries' compare-and-set transitions, their audit rows, and the finalize exposure.

Of two racing callers only one UPDATE matches ``state IN sources``; the other changes nothing
and gets a typed error explaining why (cold path).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import connection

from billing.errors import (
    EntryNotFound,
    FenceStale,
    HoldExpired,
    InvalidTransition,
)
from billing.metrics import (
    fencing_stale_total,
)
from billing.models import (
    BillingEntry,
)
from billing.states import EntryState, sources_of
from finn.audit import audit_append

logger = logging.getLogger(__name__)


_ENTRY_COLUMNS = [field.column for field in BillingEntry._meta.concrete_fields]


_ENTRY_ATTNAMES = [field.attname for field in BillingEntry._meta.concrete_fields]


_RETURNING_ENTRY = ", ".join(_ENTRY_COLUMNS)


def _entry_from_row(row: tuple[Any, ...]) -> BillingEntry:
    return BillingEntry.from_db(None, _ENTRY_ATTNAMES, list(row))


def _explain_cas_miss(
    *,
    entry_id: str,
    account_id: int | None,
    target: EntryState,
    now: datetime,
    check_expiry: bool = False,
    sources: frozenset[EntryState] | None = None,
    fence_token: int | None = None,
) -> Exception:
    """Why a compare-and-set on an entry changed nothing (cold path)."""
    row = BillingEntry.objects.filter(pk=entry_id).values("state", "account_id", "expires_at", "fence_token").first()
    if row is None or (account_id is not None and row["account_id"] != account_id):
        return EntryNotFound(f"billing entry {entry_id} not found")
    allowed = sources if sources is not None else sources_of(target)
    if row["state"] in allowed and fence_token is not None and row["fence_token"] >= fence_token:
        fencing_stale_total.inc()
        logger.warning(
            "stale fencing token refused",
            extra={"billing_entry_id": entry_id, "token": fence_token, "stored": row["fence_token"]},
        )
        return FenceStale(
            f"fencing token {fence_token} is not newer than {row['fence_token']}",
            token=fence_token,
            stored=row["fence_token"],
        )
    if row["state"] in allowed and check_expiry and row["expires_at"] <= now:
        return HoldExpired(
            f"the hold on billing entry {entry_id} expired at {row['expires_at'].isoformat()}",
            expires_at=row["expires_at"].isoformat(),
        )
    return InvalidTransition(row["state"], target.value)


def _entry_cas(
    *,
    entry_id: str,
    account_id: int | None,
    target: EntryState,
    now: datetime,
    set_sql: str = "",
    set_params: tuple[Any, ...] = (),
    sources: frozenset[EntryState] | None = None,
    require_unexpired: bool = False,
    fence_token: int | None = None,
) -> BillingEntry:
    """Compare-and-set the state of one entry; raise a typed error on a miss.

    Of two racing callers only one UPDATE matches ``state IN sources``; the
    other sees zero rows and changes nothing. With ``fence_token`` (a locked
    writer) the row must also have seen only smaller tokens: a holder whose
    Redis lock expired and was taken over cannot write any more.
    """
    allowed = sorted(s.value for s in (sources if sources is not None else sources_of(target)))
    where = ["id = %s", "state = ANY(%s)"]
    if fence_token is not None:
        set_sql = f"{set_sql + ', ' if set_sql else ''}fence_token = %s"
        set_params = (*set_params, fence_token)
        where.append("fence_token < %s")
    params: list[Any] = [target.value, now, *set_params, entry_id, allowed]
    if fence_token is not None:
        params.append(fence_token)
    if account_id is not None:
        where.append("account_id = %s")
        params.append(account_id)
    if require_unexpired:
        where.append("expires_at > %s")
        params.append(now)
    sql = (
        f"UPDATE billing_billingentry SET state = %s, updated_at = %s{', ' + set_sql if set_sql else ''} "
        f"WHERE {' AND '.join(where)} RETURNING {_RETURNING_ENTRY}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        raise _explain_cas_miss(
            entry_id=entry_id,
            account_id=account_id,
            target=target,
            now=now,
            check_expiry=require_unexpired,
            sources=sources,
            fence_token=fence_token,
        )
    return _entry_from_row(row)


def _entry_locked_state(entry_id: str) -> str:
    """Lock an entry row and read its state, for transitions with several sources.

    Cold paths only (void, finalize): the audit row must name the state the
    entry really left, and under the row lock it cannot change underneath.
    """
    state = BillingEntry.objects.select_for_update().filter(pk=entry_id).values_list("state", flat=True).first()
    return state or ""


def _money(value: int | None) -> str | None:
    return None if value is None else str(value)


def _audit_transition(
    *,
    event_type: str,
    entry: BillingEntry,
    from_state: str,
    now: datetime,
    actor: str = "",
    reason: str = "",
    extra: dict[str, Any] | None = None,
) -> None:
    payload: dict[str, Any] = {
        "account_id": str(entry.account_id),
        "from_state": from_state,
        "to_state": entry.state,
        "estimated_cost": _money(entry.estimated_cost),
        "actual_cost": _money(entry.actual_cost),
    }
    if entry.price_version is not None:  # as billing_audit_transition writes a metered entry's rows
        payload["model"] = entry.model
        payload["price_version"] = str(entry.price_version)
    if entry.usage_input_tokens is not None:
        payload["usage"] = {"input_tokens": entry.usage_input_tokens, "output_tokens": entry.usage_output_tokens}
    if extra:
        payload.update(extra)
    audit_append(
        event_type=event_type,
        payload=payload,
        correlation_id=entry.correlation_id,
        now=now,
        billing_entry_id=entry.id,
        account_id=entry.account_id,
        actor=actor,
        reason=reason,
    )


_EXPOSURE_SQL = (
    "SELECT COALESCE(SUM(actual_cost), 0) FROM billing_billingentry"
    " WHERE account_id = %s AND state IN ('FINALIZE_PENDING', 'FINALIZE_FAILED')"
)


def _finalize_exposure_limit() -> int:
    """FINALIZE_MAX_EXPOSURE_CU in µUSD (exact: CU * 1e6 / CU-per-USD, rounded down)."""
    return settings.FINALIZE_MAX_EXPOSURE_CU * 1_000_000 // settings.CREDIT_UNITS_PER_USD


def _finalize_exposure(account_id: int) -> int:
    with connection.cursor() as cursor:
        cursor.execute(_EXPOSURE_SQL, [account_id])
        return int(cursor.fetchone()[0])
