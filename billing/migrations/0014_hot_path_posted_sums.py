"""The hot path moves the posted sums in its own account UPDATE (one row write, not two).

billing/0013 kept ``posted_available``/``posted_held`` with a statement trigger on postings, which
wrote every account row a second time: finn's reserve + commit functions lost 18.5 % of their
throughput at database speed (bench/balance_guard.py). Here the three hot-path functions — owned by
the migration role and SECURITY DEFINER, with a fixed ``search_path`` — add to the posted sums the
same deltas they add to the balance and post, in the same UPDATE, and mark their posting INSERT
(``finn.posted_by = 'hot_path'``, local to the function) so the trigger leaves those rows alone.
Every other writer of postings still goes through the trigger, and the deferred check is unchanged.

Forging the mark cannot mint: a skipped trigger leaves the posted sums behind the postings, so the
balance may not move (the deferred check), and the ledger check reports the row as off its postings.
"""

from __future__ import annotations

import importlib

from django.db import migrations

hot_path = importlib.import_module("billing.migrations.0011_hot_path_functions")

DEFINER = "LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp SET finn.posted_by = '' AS $$"
MARK = "  PERFORM set_config('finn.posted_by', 'hot_path', true);\n"
UNMARK = "  PERFORM set_config('finn.posted_by', '', true);\n"

RELEASE_SET = (
    "  UPDATE billing_account a SET available = a.available + e.estimated_cost,"
    " held = a.held - e.estimated_cost,\n"
)
EDITS = {
    "RESERVE": [
        (
            "  UPDATE billing_account a SET available = a.available - p_estimate, held = a.held + p_estimate,\n",
            "  UPDATE billing_account a SET available = a.available - p_estimate, held = a.held + p_estimate,\n"
            "    posted_available = a.posted_available - p_estimate, posted_held = a.posted_held + p_estimate,\n",
        ),
        (
            "  INSERT INTO billing_posting (journal_entry_id, account_id, bucket, delta, denomination)\n"
            "  VALUES (journal, p_account, 'available', -p_estimate, 'micro_usd'),\n"
            "         (journal, p_account, 'held', p_estimate, 'micro_usd');\n",
            MARK + "  INSERT INTO billing_posting (journal_entry_id, account_id, bucket, delta, denomination)\n"
            "  VALUES (journal, p_account, 'available', -p_estimate, 'micro_usd'),\n"
            "         (journal, p_account, 'held', p_estimate, 'micro_usd');\n" + UNMARK,
        ),
    ],
    "COMMIT": [
        (
            "  UPDATE billing_account a SET available = a.available + refund, held = a.held - e.estimated_cost,\n",
            "  UPDATE billing_account a SET available = a.available + refund, held = a.held - e.estimated_cost,\n"
            "    posted_available = a.posted_available + refund, posted_held = a.posted_held - e.estimated_cost,\n",
        ),
        (
            "  INSERT INTO billing_posting (journal_entry_id, account_id, bucket, delta, denomination)\n"
            "  SELECT journal, leg.account_id, leg.bucket, leg.delta, 'micro_usd'\n",
            MARK + "  INSERT INTO billing_posting (journal_entry_id, account_id, bucket, delta, denomination)\n"
            "  SELECT journal, leg.account_id, leg.bucket, leg.delta, 'micro_usd'\n",
        ),
        ("  WHERE leg.delta <> 0;\n", "  WHERE leg.delta <> 0;\n" + UNMARK),
    ],
    "RELEASE": [
        (
            RELEASE_SET,
            RELEASE_SET + "    posted_available = a.posted_available + e.estimated_cost,"
            " posted_held = a.posted_held - e.estimated_cost,\n",
        ),
        (
            "  INSERT INTO billing_posting (journal_entry_id, account_id, bucket, delta, denomination)\n"
            "  VALUES (journal, e.account_id, 'held', -e.estimated_cost, 'micro_usd'),\n"
            "         (journal, e.account_id, 'available', e.estimated_cost, 'micro_usd');\n",
            MARK + "  INSERT INTO billing_posting (journal_entry_id, account_id, bucket, delta, denomination)\n"
            "  VALUES (journal, e.account_id, 'held', -e.estimated_cost, 'micro_usd'),\n"
            "         (journal, e.account_id, 'available', e.estimated_cost, 'micro_usd');\n" + UNMARK,
        ),
    ],
}


def _edited(name: str) -> str:
    sql: str = getattr(hot_path, name)
    assert sql.count("LANGUAGE plpgsql AS $$") == 1, name
    sql = sql.replace("LANGUAGE plpgsql AS $$", DEFINER)
    for old, new in EDITS[name]:
        assert sql.count(old) == 1, (name, old)
        sql = sql.replace(old, new)
    return sql


TRIGGER = """
CREATE OR REPLACE FUNCTION billing_posting_post_balances() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
  IF current_setting('finn.posted_by', true) = 'hot_path' THEN
    RETURN NULL;  -- the hot-path function moved the posted sums in its own UPDATE
  END IF;
  UPDATE billing_account a
     SET posted_available = a.posted_available + s.available,
         posted_held = a.posted_held + s.held
    FROM (SELECT account_id,
                 COALESCE(SUM(delta) FILTER (WHERE bucket = 'available'), 0) AS available,
                 COALESCE(SUM(delta) FILTER (WHERE bucket = 'held'), 0) AS held
            FROM new_postings WHERE denomination = 'micro_usd' GROUP BY account_id) s
   WHERE a.id = s.account_id AND a.kind <> 'system';
  RETURN NULL;
END
$$;
"""

FORWARD = _edited("RESERVE") + _edited("COMMIT") + _edited("RELEASE") + TRIGGER
BACKWARD = hot_path.RESERVE + hot_path.COMMIT + hot_path.RELEASE


class Migration(migrations.Migration):
    dependencies = [("billing", "0013_balances_follow_postings")]

    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
