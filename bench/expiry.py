#!/usr/bin/env python
"""Hold expiry latency: 10,000 holds expiring in the same second.

    .venv/bin/python bench/expiry.py [--holds 10000] [--accounts 1000]

Creates the holds through finn's services (on the `make run` database), all
expiring within one wall-clock second, then ticks the sweeper every second
as Celery beat does (`hold-expiry-sweep`, 1 s) and prints, per hold, the
delay between its expires_at and its release: p50, p99, max, and how long
each sweep took. The goal is p99 <= 5 s.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--holds", type=int, default=10_000)
    parser.add_argument("--accounts", type=int, default=1_000)
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "finn.settings")
    secret = ROOT / "var" / "secret_key"
    if "SECRET_KEY" not in os.environ and secret.exists():
        os.environ["SECRET_KEY"] = secret.read_text().strip()
    import django

    django.setup()
    from django.db import connection

    from billing.services import account_create, account_credit_mint, entry_reserve, holds_expire

    now = datetime.now(UTC)
    accounts = []
    for _ in range(args.accounts):
        account = account_create(name="bench-expiry")
        account_credit_mint(
            account_id=account.pk,
            amount=10**12,
            idempotency_key=f"bench-expiry:{account.pk}",
            correlation_id="bench",
            now=now,
        )
        accounts.append(account.pk)
    # All holds expire inside one second, far enough ahead to create them all.
    started = time.monotonic()
    target = math.ceil(time.time()) + 10 + args.holds // 400
    ids = []
    for index in range(args.holds):
        created = datetime.now(UTC)
        ttl = max(1, target - int(created.timestamp()))
        ids.append(
            entry_reserve(
                account_id=accounts[index % len(accounts)],
                estimated_cost=1000,
                correlation_id="bench-expiry",
                ttl_seconds=ttl,
                now=created,
            ).entry.id
        )
    print(f"created {len(ids)} holds in {time.monotonic() - started:.1f} s, all expiring at {target} (+<1 s)")
    while time.time() < target:
        time.sleep(0.05)
    sweeps = []
    sweep_end: dict[datetime, float] = {}  # the run's "now" (stored as updated_at) -> wall time it finished
    remaining = len(ids)
    while remaining:
        tick = time.monotonic()
        run_now = datetime.now(UTC)
        released = holds_expire(now=run_now)
        sweep_end[run_now] = time.time()
        sweeps.append((released, time.monotonic() - tick))
        remaining -= released
        time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))  # beat ticks every second
        if len(sweeps) > 60:
            break
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT updated_at, expires_at FROM billing_billingentry WHERE id = ANY(%s) AND state = 'RELEASED'",
            [ids],
        )
        # Conservative: a hold counts as released when its whole sweep finished.
        lags = sorted(sweep_end[updated] - expires.timestamp() for updated, expires in cursor.fetchall())
    p99 = lags[min(len(lags) - 1, int(len(lags) * 0.99))]
    print(f"released {len(lags)} / {len(ids)} holds")
    print(
        f"lag after expiry: p50 {statistics.median(lags):.2f} s, p99 {p99:.2f} s, max {lags[-1]:.2f} s (goal p99 <= 5 s)"
    )
    print("sweeps (released, seconds): " + ", ".join(f"({n}, {s:.2f})" for n, s in sweeps if n))


if __name__ == "__main__":
    main()
