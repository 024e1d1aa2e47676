"""Estimate accuracy per model: the distribution of actual / estimate over a window (sizing holds).

Read from the metered entries themselves (``billing_entry_model_idx``), so every node and every
restart agrees; the Prometheus histogram ``finn_estimate_accuracy_ratio`` carries the same ratio
as it happens. The ratio is of a commit's actual cost to its hold at commit time (after any
extends); an overcapture is a commit charged above its hold. Ratios are not money: floats here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import connection

from credits.metrics import estimate_accuracy_ratio, metered_commits_total
from finn.errors import InvalidRequest

MAX_WINDOW_SECONDS = 30 * 86_400
_SQL = (
    "SELECT count(*), percentile_cont(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP"
    " (ORDER BY actual_cost::float8 / estimated_cost), count(*) FILTER (WHERE actual_cost > estimated_cost),"
    " COALESCE(sum(actual_cost), 0), COALESCE(sum(estimated_cost), 0)"
    " FROM billing_billingentry WHERE model = %s AND model <> '' AND created_at >= %s AND created_at < %s"
    " AND actual_cost IS NOT NULL AND state <> 'VOIDED' AND (%s::bigint IS NULL OR account_id = %s)"
)


@dataclass(frozen=True)
class Accuracy:
    model: str
    since: datetime
    until: datetime
    commits: int
    p50: float | None
    p90: float | None
    p99: float | None
    overcapture_rate: float | None
    charged: int  # µUSD actually charged in the window
    held: int  # µUSD of the holds those commits had


def model_accuracy(*, model: str, now: datetime, window_seconds: int, account_id: int | None) -> Accuracy:
    """Over metered entries of ``model`` reserved in the last ``window_seconds`` (one account, or all)."""
    if isinstance(window_seconds, bool) or not 60 <= window_seconds <= MAX_WINDOW_SECONDS:
        raise InvalidRequest(f"window must be 60 to {MAX_WINDOW_SECONDS} seconds", reason="invalid_window")
    since = now - timedelta(seconds=window_seconds)
    with connection.cursor() as cursor:
        cursor.execute(_SQL, [model, since, now, account_id, account_id])
        commits, percentiles, over, charged, held = cursor.fetchone()
    p50, p90, p99 = (round(p, 4) for p in percentiles) if percentiles else (None, None, None)
    rate = round(over / commits, 4) if commits else None
    return Accuracy(model, since, now, int(commits), p50, p90, p99, rate, int(charged), int(held))


def accuracy_observe(*, model: str, actual: int, estimate: int) -> None:
    """Count one metered commit (after it committed)."""
    estimate_accuracy_ratio.labels(model=model).observe(actual / estimate if estimate else 0.0)
    outcome = "overcapture" if actual > estimate else "within"
    metered_commits_total.labels(model=model, outcome=outcome).inc()
