#!/usr/bin/env python
"""What an index on the journal costs the hot path: finn's reserve + commit with it and without it.

    .venv/bin/python bench/index_cost.py [--clients 8] [--seconds 15] [--rounds 2]

Same database and pgbench script as bench/balance_guard.py (``finn_bench_guard``, 1,000 funded
accounts, ``billing_entry_reserve`` + ``billing_entry_commit``), alternately with the journal's
BRIN index on ``created_at`` (billing/0016, the dashboard's revenue per day and statements) and
without it. The database's own limit (``bench/anchor/raw_anchor.sh``) runs in the same session;
every figure is also a ratio to it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.balance_guard import _psql, run_ab  # noqa: E402

DROP = "DROP INDEX billing_journal_created_brin"
CREATE = (
    "CREATE INDEX billing_journal_created_brin ON billing_journalentry USING brin (created_at)"
    " WITH (autosummarize = on)"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--accounts", type=int, default=1_000)
    args = parser.parse_args()

    anchor, with_index, without = run_ab(args, switch_off=lambda: _psql(DROP), switch_on=lambda: _psql(CREATE))
    best_on, best_off = max(with_index), max(without)
    print(f"anchor (pgbench, {args.clients} clients, prepared plpgsql): {anchor:.1f} billed/s")
    print(
        f"with the BRIN index   : {', '.join(f'{v:.1f}' for v in with_index)} billed/s (best {best_on / anchor:.3f}x)"
    )
    print(f"without the BRIN index: {', '.join(f'{v:.1f}' for v in without)} billed/s (best {best_off / anchor:.3f}x)")
    print(f"index cost: {100 * (1 - best_on / best_off):.1f} % of throughput at database speed")


if __name__ == "__main__":
    main()
