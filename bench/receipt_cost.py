#!/usr/bin/env python
"""What a signed receipt costs a commit: finn's reserve + commit, and the receipt of each, timed in-process.

    .venv/bin/python bench/receipt_cost.py [--count 2000]

Builds its own database (``finn_bench_receipts``, migrated, one funded account), then for
``--count`` billed requests times ``entry_reserve`` + ``entry_commit`` (the services the API calls)
and, separately, ``entry_receipt`` of each committed entry as the commit view makes it (the audit
sequence the commit answered, the chain head cached for 5 s, an ES256 signature). Single thread: the figures are per-request latency, and the
receipt's share of a billed request. The database's own limit (``bench/anchor/raw_anchor.sh``,
8 clients) runs in the same session for scale.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATABASE = "finn_bench_receipts"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=2000)
    args = parser.parse_args()
    psql = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-qAt", "-d", "postgres", "-c"]
    subprocess.run([*psql, f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"], check=True)
    subprocess.run([*psql, f"CREATE DATABASE {DATABASE}"], check=True)
    os.environ["DJANGO_SETTINGS_MODULE"] = "finn.settings_test"
    os.environ["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{DATABASE}"
    import django

    django.setup()
    from django.core.management import call_command

    from billing import services
    from credits.receipts import entry_receipt
    from finn import clock

    call_command("migrate", verbosity=0)
    account = services.account_create(name="bench-receipts")
    services.account_credit_mint(
        account_id=account.pk, amount=10**15, idempotency_key="r", correlation_id="bench", now=clock.now()
    )
    billed, signed, entries = [], [], []
    for _ in range(args.count):
        start = time.perf_counter()
        held = services.entry_reserve(account_id=account.pk, estimated_cost=1_000, correlation_id="b", now=clock.now())
        done = services.entry_commit(entry_id=held.entry.id, actual_cost=600, now=clock.now())
        billed.append(time.perf_counter() - start)
        entries.append((done.entry, done.audit_sequence))
    for entry, sequence in entries:
        start = time.perf_counter()
        entry_receipt(entry, commit_sequence=sequence)  # as the commit view signs it
        signed.append(time.perf_counter() - start)
    anchor_out = subprocess.run(
        ["bash", str(ROOT / "bench" / "anchor" / "raw_anchor.sh"), "8", "10"], check=True, capture_output=True,
        text=True,
    ).stdout  # fmt: skip
    anchor = float(re.search(r"billed_per_s=([0-9.]+)", anchor_out).group(1))  # type: ignore[union-attr]
    b, r = statistics.median(billed) * 1e6, statistics.median(signed) * 1e6
    print(f"anchor (pgbench, 8 clients): {anchor:.1f} billed/s")
    print(
        f"reserve + commit (in-process, 1 thread): median {b:.0f} µs ({1e6 / b:.0f} billed/s, {1e6 / b / anchor:.3f}x)"
    )
    print(f"receipt of a commit: median {r:.0f} µs, p99 {statistics.quantiles(signed, n=100)[98] * 1e6:.0f} µs")
    print(f"receipt / billed request: {100 * r / b:.1f} %")


if __name__ == "__main__":
    main()
