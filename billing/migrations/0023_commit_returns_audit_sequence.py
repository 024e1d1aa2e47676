"""The commit function answers the sequence of its audit row (a receipt names it without another query).

``billing_audit_transition`` returns the sequence it inserted (was void: dropped and re-created,
callers use PERFORM or take the value); billing/0019's commit returns it as ``audit_sequence``.
Measured before (bench/receipt_cost.py): the receipt's own audit query was ~150 µs of its ~280 µs.
"""

from __future__ import annotations

import importlib

from django.db import migrations

hot_path = importlib.import_module("billing.migrations.0011_hot_path_functions")
metered = importlib.import_module("billing.migrations.0019_metered_entries")

AUDIT_0019 = metered._edit(hot_path.AUDIT, metered.AUDIT_EDITS)
COMMIT_0019 = metered._edit(metered.OLD_COMMIT, metered.COMMIT_EDITS)
AUDIT = metered._edit(
    AUDIT_0019,
    [
        (") RETURNS void LANGUAGE plpgsql AS $$\n", ") RETURNS bigint LANGUAGE plpgsql AS $$\n"),
        ("  payload text;\n", "  payload text;\n  seq bigint;\n"),
        (
            "    payload::jsonb, finn_crc32(payload), p_now);\n",
            "    payload::jsonb, finn_crc32(payload), p_now) RETURNING sequence INTO seq;\n  RETURN seq;\n",
        ),
    ],
)
COMMIT = metered._edit(
    COMMIT_0019,
    [
        (
            "day_held bigint, low_balance_first boolean)",
            "day_held bigint, low_balance_first boolean,\n                 audit_sequence bigint)",
        ),
        (
            "  PERFORM billing_audit_transition('billing_commit', e, 'RESERVE_HELD', p_now, '', NULL, NULL);\n",
            "  audit_sequence := billing_audit_transition('billing_commit', e, 'RESERVE_HELD', p_now, '', NULL, NULL);\n",
        ),
    ],
)
DROP_AUDIT = (
    "DROP FUNCTION billing_audit_transition(varchar, billing_billingentry, varchar, timestamptz, text, bigint, bigint);"
)
DROP_COMMIT = (
    "DROP FUNCTION billing_entry_commit(varchar, bigint, bigint, timestamptz, bigint, boolean, bigint, boolean, bigint,"
    " bigint);"
)
FORWARD = DROP_COMMIT + DROP_AUDIT + AUDIT + COMMIT
BACKWARD = DROP_COMMIT + DROP_AUDIT + AUDIT_0019 + COMMIT_0019


class Migration(migrations.Migration):
    dependencies = [("billing", "0022_spend_policies")]

    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
