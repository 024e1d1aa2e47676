#!/usr/bin/env python
"""Audit-chain verify and balance rebuild over 1,000,000 records.

    .venv/bin/python bench/wal.py [--records 1000000]

Uses its own database (`finn_bench_wal`, created and migrated here) so the
`make run` data is untouched. Loads --records audit records (real CRC32s of
canonical payloads) and --records postings (credit transfers, zero-sum per
journal, with matching balance rows) with COPY, chains the log, then times
`audit_verify` and `rebuild_balances`. Goal: each <= 60 s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import zlib
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DB = "finn_bench_wal"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--accounts", type=int, default=1_000)
    args = parser.parse_args()
    base = os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432")
    os.environ["DATABASE_URL"] = f"{base}/{DB}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "finn.settings")
    secret = ROOT / "var" / "secret_key"
    if "SECRET_KEY" not in os.environ and secret.exists():
        os.environ["SECRET_KEY"] = secret.read_text().strip()
    import psycopg

    with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DB}")
        admin.execute(f"CREATE DATABASE {DB}")
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, check=True)

    import django

    django.setup()
    from billing.wal import rebuild_balances
    from finn.audit_chain import audit_chain, audit_verify

    dsn = f"{base}/{DB}"
    now = datetime.now(UTC)
    started = time.monotonic()
    with psycopg.connect(dsn) as conn:
        with conn.cursor() as cur:
            cur.execute(
                "INSERT INTO billing_account (kind, code, name, available, held, credit_limit, allow_overcapture,"
                " version, created_at) VALUES ('system', 'treasury:usdc_received', 'treasury', 0, 0, 0, false, 0, now())"
                " RETURNING id"
            )
            treasury = cur.fetchone()[0]
            cur.execute(
                "INSERT INTO billing_account (kind, name, available, held, credit_limit, allow_overcapture, version,"
                " created_at) SELECT 'user', 'bench', 0, 0, 0, false, 0, now() FROM generate_series(1, %s)"
                " RETURNING id",
                [args.accounts],
            )
            accounts = [r[0] for r in cur.fetchall()]
            journals = args.records // 2
            cur.execute(
                "INSERT INTO billing_journalentry (event_type, correlation_id, rounding_direction, created_at)"
                " SELECT 'credit_mint', 'bench', '', now() FROM generate_series(1, %s) RETURNING id",
                [journals],
            )
            journal_ids = [r[0] for r in cur.fetchall()]
            with cur.copy(
                "COPY billing_posting (journal_entry_id, account_id, bucket, delta, denomination) FROM STDIN"
            ) as copy:
                for index, journal_id in enumerate(journal_ids):
                    account = accounts[index % len(accounts)]
                    amount = 1000 + index % 997
                    copy.write_row((journal_id, treasury, "available", -amount, "micro_usd"))
                    copy.write_row((journal_id, account, "available", amount, "micro_usd"))
            cur.execute(
                "UPDATE billing_account a SET available = s.total FROM (SELECT account_id, SUM(delta) AS total"
                " FROM billing_posting WHERE bucket = 'available' GROUP BY account_id) s"
                " WHERE a.id = s.account_id AND a.kind <> 'system'"
            )
            with cur.copy(
                "COPY finn_auditevent (schema_version, event_type, billing_entry_id, account_id, correlation_id,"
                " actor, reason, payload, crc32, created_at) FROM STDIN"
            ) as copy:
                for index in range(args.records):
                    account = accounts[index % len(accounts)]
                    payload = {"account_id": str(account), "amount": str(1000 + index % 997), "n": index}
                    raw = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
                    crc = f"{zlib.crc32(raw) & 0xFFFFFFFF:08x}"
                    copy.write_row((1, "credit_mint", None, account, "bench", "", "", raw.decode(), crc, now))
        conn.commit()
    print(f"loaded {args.records} audit records and {journals * 2} postings in {time.monotonic() - started:.1f} s")

    tick = time.monotonic()
    linked = audit_chain(lag_seconds=0, batch_size=20_000, max_batches=10_000)
    print(f"audit_chain: linked {linked} records in {time.monotonic() - tick:.1f} s")
    report = audit_verify()
    print(
        f"audit_verify: {report.records} records, ok={report.ok}, {report.seconds:.1f} s "
        f"({report.records / max(report.seconds, 1e-9):,.0f} records/s; goal <= 60 s)"
    )
    rebuilt = rebuild_balances(now=datetime.now(UTC))
    print(
        f"rebuild_balances: {rebuilt.accounts} accounts from {journals * 2} postings, "
        f"{len(rebuilt.differences)} differences, {rebuilt.seconds:.1f} s (goal <= 60 s)"
    )


if __name__ == "__main__":
    main()
