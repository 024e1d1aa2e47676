"""The one client of the upstream ledger (finalize). Never called inside a transaction."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from django.conf import settings


@dataclass(frozen=True)
class UpstreamResult:
    acked: bool
    status: int | None
    error: str = ""


def finalize_post(*, billing_entry_id: str, account_id: int, actual_cost: int, correlation_id: str) -> UpstreamResult:
    """POST one committed entry to FINALIZE_URL; any 2xx is an acknowledgement.

    The entry id doubles as the Idempotency-Key: delivery is at least once
    (a timeout may hide a success), so the upstream must dedupe on it.
    """
    body = {
        "billing_entry_id": billing_entry_id,
        "account_id": str(account_id),
        "actual_cost_micro_usd": str(actual_cost),
        "correlation_id": correlation_id,
    }
    try:
        response = httpx.post(
            settings.FINALIZE_URL,
            json=body,
            headers={"Idempotency-Key": billing_entry_id, "X-Correlation-ID": correlation_id},
            timeout=settings.FINALIZE_TIMEOUT_SECONDS,
        )
    except httpx.TimeoutException:
        return UpstreamResult(acked=False, status=None, error="timeout")
    except httpx.HTTPError as exc:
        return UpstreamResult(acked=False, status=None, error=f"{type(exc).__name__}: {exc}"[:300])
    if 200 <= response.status_code < 300:
        return UpstreamResult(acked=True, status=response.status_code)
    return UpstreamResult(acked=False, status=response.status_code, error=f"http {response.status_code}")
