#!/usr/bin/env python
"""Billed requests per second: finn over HTTP vs the same flow as raw SQL.

Usage (with `make run` serving on 127.0.0.1:8000, in another terminal):

    make bench BENCH_ARGS="--clients 32 --seconds 20"

1. Ensures --accounts bench accounts exist (created once through finn's own
   services, each with credit and an API key; keys cached in var/bench.json).
2. HTTP phase: --clients concurrent clients loop for --seconds, each billed
   request = reserve (POST /api/v1/billing/entries) + commit. Prints billed
   requests/s, p50/p99 latency of a billed request, and errors.
3. Raw phase: the same reserve + commit statements (entry, account row,
   journal, postings, audit; one transaction each) sent with psycopg by the
   same number of clients for the same time, without Django or HTTP.
4. Prints e2e / raw. The goal is e2e >= 0.25 x raw.

Both phases write real, balanced ledger rows: `manage.py ledger_check` passes
afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
import zlib
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def setup_accounts(count: int, credit: int) -> list[tuple[int, str]]:
    """Return (account_id, api_key) pairs, creating missing accounts via services."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "finn.settings")
    secret_file = ROOT / "var" / "secret_key"
    if "SECRET_KEY" not in os.environ and secret_file.exists():
        os.environ["SECRET_KEY"] = secret_file.read_text().strip()
    import django

    django.setup()
    from django.utils import timezone

    from billing.models import Account
    from billing.services import account_create, account_credit_mint
    from credits.api_keys import api_key_create

    cache = ROOT / "var" / "bench.json"
    pairs: list[tuple[int, str]] = []
    if cache.exists():
        stored = [tuple(p) for p in json.loads(cache.read_text())]
        existing = set(Account.objects.filter(pk__in=[p[0] for p in stored]).values_list("pk", flat=True))
        pairs = [(int(a), str(k)) for a, k in stored if a in existing]
    started = time.monotonic()
    while len(pairs) < count:
        now = timezone.now()
        account = account_create(name="bench")
        account_credit_mint(
            account_id=account.pk, amount=credit, idempotency_key=f"bench:{account.pk}", correlation_id="bench", now=now
        )
        pairs.append((account.pk, api_key_create(account=account, name="bench", now=now).secret))
        if len(pairs) % 1000 == 0:
            print(f"  created {len(pairs)} accounts ({time.monotonic() - started:.0f} s)", flush=True)
            cache.write_text(json.dumps(pairs))
    cache.parent.mkdir(exist_ok=True)
    cache.write_text(json.dumps(pairs))
    return pairs[:count]


def report(name: str, latencies: list[float], errors: int, seconds: float) -> float:
    rate = len(latencies) / seconds
    if latencies:
        ordered = sorted(latencies)
        p50 = statistics.median(ordered) * 1000
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
    else:
        p50 = p99 = float("nan")
    print(f"{name:>5}: {rate:8.1f} billed req/s   p50 {p50:7.2f} ms   p99 {p99:7.2f} ms   errors {errors}")
    return rate


async def http_phase(url: str, pairs: list[tuple[int, str]], clients: int, seconds: float) -> tuple[list[float], int]:
    import httpx

    latencies: list[float] = []
    errors = 0
    kinds: Counter[str] = Counter()
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:

        async def worker() -> None:
            nonlocal errors
            while time.monotonic() < deadline:
                _, key = random.choice(pairs)
                headers = {"Authorization": f"Bearer {key}"}
                started = time.perf_counter()
                try:
                    reserved = await client.post(
                        "/api/v1/billing/entries", json={"estimated_cost": 1000}, headers=headers
                    )
                    if reserved.status_code != 201:
                        errors += 1
                        kinds[f"reserve {reserved.status_code}"] += 1
                        continue
                    entry_id = reserved.json()["entry"]["id"]
                    committed = await client.post(
                        f"/api/v1/billing/entries/{entry_id}/commit", json={"actual_cost": 700}, headers=headers
                    )
                    if committed.status_code != 200:
                        errors += 1
                        kinds[f"commit {committed.status_code}"] += 1
                        continue
                except httpx.HTTPError as exc:
                    errors += 1
                    kinds[type(exc).__name__] += 1
                    continue
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(worker() for _ in range(clients)))
    if kinds:
        print(f"  HTTP errors by kind: {dict(kinds)}")
    return latencies, errors


def _crc(payload: dict[str, object]) -> str:
    raw = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return f"{zlib.crc32(raw) & 0xFFFFFFFF:08x}"


async def raw_phase(dsn: str, pairs: list[tuple[int, str]], clients: int, seconds: float) -> tuple[list[float], int]:
    import psycopg
    from ulid import ULID

    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + seconds
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute("SELECT id FROM billing_account WHERE code = 'system:revenue'")
        row = await cur.fetchone()
        if row is None:
            raise SystemExit("run one billed request through finn first (system:revenue missing)")
        revenue = row[0]

    async def post(
        conn: psycopg.AsyncConnection, entry_id: str, event: str, legs: list[tuple[int, str, int]], now: datetime
    ) -> None:
        # Same shape as billing.services._post: journal row and postings in one statement.
        values = ", ".join(["(%s::bigint, %s::varchar, %s::bigint)"] * len(legs))
        params: list[object] = [entry_id, event, now]
        for leg in legs:
            params.extend(leg)
        await conn.execute(
            "WITH journal AS (INSERT INTO billing_journalentry (billing_entry_id, event_type, correlation_id,"
            " rounding_direction, created_at) VALUES (%s, %s, 'bench-raw', '', %s) RETURNING id)"
            " INSERT INTO billing_posting (journal_entry_id, account_id, bucket, delta, denomination)"
            f" SELECT journal.id, leg.account_id, leg.bucket, leg.delta, 'micro_usd' FROM journal, (VALUES {values})"
            " AS leg (account_id, bucket, delta)",
            params,
        )

    async def audit(conn: psycopg.AsyncConnection, event: str, entry_id: str, account_id: int, now: datetime) -> None:
        payload = {"account_id": str(account_id), "event": event}
        await conn.execute(
            "INSERT INTO finn_auditevent (schema_version, event_type, billing_entry_id, account_id, correlation_id,"
            " actor, reason, payload, crc32, created_at) VALUES (1, %s, %s, %s, 'bench-raw', '', '', %s, %s, %s)",
            (event, entry_id, account_id, json.dumps(payload), _crc(payload), now),
        )

    async def worker() -> None:
        nonlocal errors
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            while time.monotonic() < deadline:
                account_id, _ = random.choice(pairs)
                started = time.perf_counter()
                try:
                    now = datetime.now(UTC)
                    entry_id = str(ULID())
                    async with conn.transaction():
                        await conn.execute(
                            "INSERT INTO billing_billingentry (id, account_id, correlation_id, state, estimated_cost,"
                            " credit_units_per_usd, usd_usdc_rate, rate_frozen_at, expires_at, finalize_attempts,"
                            " finalize_last_error, fence_token, release_reason, void_reason, voided_by, created_at,"
                            " updated_at) VALUES"
                            " (%s, %s, 'bench-raw', 'RESERVE_HELD', 1000, 100, 1, %s, %s, 0, '', 0, '', '', '', %s, %s)",
                            (entry_id, account_id, now, now + timedelta(seconds=300), now, now),
                        )
                        cur = await conn.execute(
                            "UPDATE billing_account SET available = available - 1000, held = held + 1000,"
                            " version = version + 1 WHERE id = %s AND available + credit_limit >= 1000"
                            " AND (SELECT COALESCE(SUM(actual_cost), 0) FROM billing_billingentry WHERE account_id = %s"
                            " AND state IN ('FINALIZE_PENDING', 'FINALIZE_FAILED')) <= 5000000"
                            " RETURNING available",
                            (account_id, account_id),
                        )
                        if await cur.fetchone() is None:
                            raise RuntimeError("insufficient funds")
                        await post(
                            conn,
                            entry_id,
                            "billing_reserve",
                            [(account_id, "available", -1000), (account_id, "held", 1000)],
                            now,
                        )
                        await audit(conn, "billing_reserve", entry_id, account_id, now)
                    now = datetime.now(UTC)
                    async with conn.transaction():
                        cur = await conn.execute(
                            "UPDATE billing_billingentry SET state = 'COMMITTED', actual_cost = 700, updated_at = %s"
                            " WHERE id = %s AND state = 'RESERVE_HELD' AND expires_at > %s RETURNING estimated_cost",
                            (now, entry_id, now),
                        )
                        if await cur.fetchone() is None:
                            raise RuntimeError("commit lost")
                        await conn.execute(
                            "UPDATE billing_account SET available = available + 300, held = held - 1000,"
                            " version = version + 1 WHERE id = %s",
                            (account_id,),
                        )
                        await post(
                            conn,
                            entry_id,
                            "billing_commit",
                            [(account_id, "held", -1000), (revenue, "available", 700), (account_id, "available", 300)],
                            now,
                        )
                        await audit(conn, "billing_commit", entry_id, account_id, now)
                except Exception:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(worker() for _ in range(clients)))
    return latencies, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument(
        "--database-url", default=os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/finn")
    )
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--credit", type=int, default=1_000_000_000, help="µUSD minted per bench account")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()

    print(f"setting up {args.accounts} accounts ...", flush=True)
    pairs = setup_accounts(args.accounts, args.credit)
    print(f"HTTP phase: {args.clients} clients, {args.seconds:.0f} s against {args.url}", flush=True)
    latencies, errors = asyncio.run(http_phase(args.url, pairs, args.clients, args.seconds))
    e2e = report("e2e", latencies, errors, args.seconds)
    print(f"raw SQL phase: {args.clients} connections, {args.seconds:.0f} s", flush=True)
    dsn = args.database_url.replace("postgres://", "postgresql://", 1)
    latencies, errors = asyncio.run(raw_phase(dsn, pairs, args.clients, args.seconds))
    raw = report("raw", latencies, errors, args.seconds)
    ratio = e2e / raw if raw else float("nan")
    print(f"ratio e2e/raw = {ratio:.3f} (goal >= 0.25)")


if __name__ == "__main__":
    main()
