#!/usr/bin/env python
"""What the database's balance guard costs: finn's reserve + commit functions with it and without it.

    .venv/bin/python bench/balance_guard.py [--clients 8] [--seconds 15] [--rounds 2]

Builds its own database (``finn_bench_guard``, migrated, 1,000 funded accounts), then drives
finn's two hot-path functions (``billing_entry_reserve`` + ``billing_entry_commit``, prepared,
random accounts) with pgbench, alternately with the guard's triggers (billing/0013: the posted
sums kept by a statement trigger on postings, the deferred balance check) and without them. The
database's own limit (``bench/anchor/raw_anchor.sh``) runs in the same session; every figure is
also printed as a ratio to it. No server is needed.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATABASE = "finn_bench_guard"
PSQL = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-qAt"]

SCRIPT = """\\set a random({first}, {last})
SELECT '0' || upper(substr(md5(random()::text || clock_timestamp()::text), 1, 25)) AS eid \\gset
SELECT 1 FROM billing_entry_reserve(:eid, :a, 'bench', 1000, 100, 1.0, now(), now() + interval '300 s', NULL,
  9223372036854775807, '{{}}', '00000000', false, '', NULL);
SELECT 1 FROM billing_entry_commit(:eid, :a, 600, now(), {revenue}, false, NULL, false, NULL, NULL);
"""

GUARD_OFF = """
DROP TRIGGER billing_posting_post_balances ON billing_posting;
DROP TRIGGER billing_account_balance_follows_postings ON billing_account;
"""


def _migration(name: str) -> Any:
    return importlib.import_module(f"billing.migrations.{name}")


def _guard_off_sql() -> str:
    """No guard at all: the triggers dropped and the functions as before it (billing/0011)."""
    before = _migration("0011_hot_path_functions")
    return GUARD_OFF + before.RESERVE + before.COMMIT + before.RELEASE


def _guard_on_sql() -> str:
    """The guard as migrated: the posted sums caught up, the functions of billing/0014, the triggers."""
    return GUARD_ON + _migration("0014_hot_path_posted_sums").FORWARD


GUARD_ON = """
SET session_replication_role = replica;
UPDATE billing_account a SET posted_available = s.available, posted_held = s.held
  FROM (SELECT account_id, COALESCE(SUM(delta) FILTER (WHERE bucket = 'available'), 0) AS available,
               COALESCE(SUM(delta) FILTER (WHERE bucket = 'held'), 0) AS held
          FROM billing_posting WHERE denomination = 'micro_usd' GROUP BY account_id) s
 WHERE a.id = s.account_id AND a.kind <> 'system';
SET session_replication_role = origin;
CREATE TRIGGER billing_posting_post_balances
  AFTER INSERT ON billing_posting REFERENCING NEW TABLE AS new_postings
  FOR EACH STATEMENT EXECUTE FUNCTION billing_posting_post_balances();
CREATE CONSTRAINT TRIGGER billing_account_balance_follows_postings
  AFTER INSERT OR UPDATE OF available, held ON billing_account
  DEFERRABLE INITIALLY DEFERRED
  FOR EACH ROW WHEN (NEW.kind <> 'system')
  EXECUTE FUNCTION billing_account_balance_follows_postings();
"""


def _psql(sql: str, database: str = DATABASE) -> str:
    return subprocess.run([*PSQL, "-c", sql, database], check=True, capture_output=True, text=True).stdout


def _psql_file(sql: str) -> None:
    subprocess.run([*PSQL, "-f", "-", DATABASE], input=sql, check=True, capture_output=True, text=True)


def _setup(accounts: int) -> tuple[int, int, int]:
    _psql(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)", "postgres")
    _psql(f"CREATE DATABASE {DATABASE}", "postgres")
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "finn.settings_test",
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{DATABASE}",
    }
    code = f"""
import django; django.setup()
from django.core.management import call_command
from django.utils import timezone
call_command("migrate", verbosity=0)
from billing.services import account_create, account_credit_mint, system_account_id, SYSTEM_REVENUE
ids = []
for _ in range({accounts}):
    account = account_create(name="bench-guard")
    account_credit_mint(account_id=account.pk, amount=10**15, idempotency_key=f"g{{account.pk}}",
                        correlation_id="bench", now=timezone.now())
    ids.append(account.pk)
print(min(ids), max(ids), system_account_id(SYSTEM_REVENUE))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    first, last, revenue = (int(v) for v in out.stdout.split()[-3:])
    return first, last, revenue


def _pgbench(script: Path, clients: int, seconds: int) -> float:
    out = subprocess.run(
        ["pgbench", "-h", "127.0.0.1", "-U", "postgres", "-n", "-M", "prepared", "-c", str(clients), "-j", "2",
         "-T", str(seconds), "-f", str(script), DATABASE],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    found = re.search(r"^tps = ([0-9.]+)", out, re.M)
    if not found:
        raise SystemExit(f"pgbench gave no tps:\n{out}")
    return float(found.group(1))


def run_ab(
    args: argparse.Namespace, *, switch_off: Callable[[], None], switch_on: Callable[[], None]
) -> tuple[float, list[float], list[float]]:
    """The database's own limit, then ``args.rounds`` pairs of pgbench runs: as migrated, then switched off.

    Builds the database first; each round switches back on after its second run. Answers
    (anchor billed/s, runs on, runs off).
    """
    first, last, revenue = _setup(args.accounts)
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as handle:
        handle.write(SCRIPT.format(first=first, last=last, revenue=revenue))
        script = Path(handle.name)
    anchor_out = subprocess.run(
        ["bash", str(ROOT / "bench" / "anchor" / "raw_anchor.sh"), str(args.clients), str(args.seconds)],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    anchor = float(re.search(r"billed_per_s=([0-9.]+)", anchor_out).group(1))  # type: ignore[union-attr]
    _pgbench(script, args.clients, max(3, args.seconds // 3))  # warm-up, discarded: the first run is not colder
    on: list[float] = []
    off: list[float] = []
    for _ in range(args.rounds):
        on.append(_pgbench(script, args.clients, args.seconds))
        switch_off()
        off.append(_pgbench(script, args.clients, args.seconds))
        switch_on()
    script.unlink()
    return anchor, on, off


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--accounts", type=int, default=1_000)
    args = parser.parse_args()

    anchor, with_guard, without = run_ab(
        args, switch_off=lambda: _psql_file(_guard_off_sql()), switch_on=lambda: _psql_file(_guard_on_sql())
    )
    # The guard is back on: the ledger must still balance row by row.
    off = _psql(
        "SELECT count(*) FROM billing_account WHERE kind <> 'system'"
        " AND (available <> posted_available OR held <> posted_held)"
    ).strip()
    best_on, best_off = max(with_guard), max(without)
    print(f"anchor (pgbench, {args.clients} clients, prepared plpgsql): {anchor:.1f} billed/s")
    print(
        f"finn functions, guard on : {', '.join(f'{v:.1f}' for v in with_guard)} billed/s (best {best_on / anchor:.3f}x)"
    )
    print(
        f"finn functions, guard off: {', '.join(f'{v:.1f}' for v in without)} billed/s (best {best_off / anchor:.3f}x)"
    )
    print(f"guard cost: {100 * (1 - best_on / best_off):.1f} % of throughput at database speed; rows off: {off}")


if __name__ == "__main__":
    main()
