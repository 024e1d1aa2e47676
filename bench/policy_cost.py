#!/usr/bin/env python
"""What the agent budget-policy check costs the hot path: finn's reserve + commit with it and without it.

    .venv/bin/python bench/policy_cost.py [--clients 8] [--seconds 15] [--rounds 2]

Same database and pgbench script as bench/balance_guard.py (``finn_bench_guard``, 1,000 funded
accounts without a policy: the common case, one primary-key probe of ``billing_spendpolicy`` per
reserve), alternately with billing/0022's reserve (which calls ``billing_spend_policy_check``) and
with billing/0019's (which does not). The database's own limit runs in the same session; every
figure is also a ratio to it.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.balance_guard import _psql, run_ab  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--accounts", type=int, default=1_000)
    args = parser.parse_args()
    policies = importlib.import_module("billing.migrations.0022_spend_policies")

    anchor, with_check, without = run_ab(
        args, switch_off=lambda: _psql(policies.RESERVE_0019), switch_on=lambda: _psql(policies.RESERVE)
    )
    best_on, best_off = max(with_check), max(without)
    print(f"anchor (pgbench, {args.clients} clients, prepared plpgsql): {anchor:.1f} billed/s")
    print(
        f"with the policy check   : {', '.join(f'{v:.1f}' for v in with_check)} billed/s (best {best_on / anchor:.3f}x)"
    )
    print(
        f"without the policy check: {', '.join(f'{v:.1f}' for v in without)} billed/s (best {best_off / anchor:.3f}x)"
    )
    print(f"policy check cost: {100 * (1 - best_on / best_off):.1f} % of throughput at database speed")


if __name__ == "__main__":
    main()
