"""No balance change without its postings, enforced by PostgreSQL (not only by the ledger check).

Each account row carries ``posted_available`` / ``posted_held``: the sums of its µUSD postings,
maintained only by a statement-level trigger on ``billing_posting`` (SECURITY DEFINER; the app
role may not write these two columns: webhooks/0005). A deferred constraint trigger checks at
commit that every user/agent account whose ``available`` or ``held`` changed (or that was
inserted) equals its posted sums. So ``UPDATE billing_account SET available = available + 1000000``
without postings fails at COMMIT with ``billing_account_balance_follows_postings``, whoever runs it;
``rebuild_balances --repair`` still works (it sets the rows to the sums of the postings).

System accounts (treasury, revenue, …) are skipped, as by the ledger check: their rows are not
balances, and every commit posts to revenue (maintaining it would serialize all commits on one
row). An account's ``kind`` never changes (otherwise a row could step out of the check).
Cost on the hot path: see bench/balance_guard.py and the README.
"""

from __future__ import annotations

from django.db import migrations

FORWARD = """
ALTER TABLE billing_account
  ADD COLUMN posted_available bigint NOT NULL DEFAULT 0,
  ADD COLUMN posted_held bigint NOT NULL DEFAULT 0;

UPDATE billing_account a
   SET posted_available = s.available, posted_held = s.held
  FROM (SELECT account_id,
               COALESCE(SUM(delta) FILTER (WHERE bucket = 'available'), 0) AS available,
               COALESCE(SUM(delta) FILTER (WHERE bucket = 'held'), 0) AS held
          FROM billing_posting WHERE denomination = 'micro_usd' GROUP BY account_id) s
 WHERE a.id = s.account_id AND a.kind <> 'system';

DO $$
DECLARE off_by bigint;
BEGIN
  SELECT id INTO off_by FROM billing_account
   WHERE kind <> 'system' AND (available <> posted_available OR held <> posted_held) LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION 'account % differs from its postings: run manage.py rebuild_balances --repair first', off_by;
  END IF;
END $$;

CREATE FUNCTION billing_posting_post_balances() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
BEGIN
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

CREATE TRIGGER billing_posting_post_balances
  AFTER INSERT ON billing_posting REFERENCING NEW TABLE AS new_postings
  FOR EACH STATEMENT EXECUTE FUNCTION billing_posting_post_balances();

CREATE FUNCTION billing_account_balance_follows_postings() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  row_now record;
BEGIN
  SELECT available, held, posted_available, posted_held INTO row_now FROM billing_account WHERE id = NEW.id;
  IF row_now.available <> row_now.posted_available OR row_now.held <> row_now.posted_held THEN
    RAISE EXCEPTION 'account %: balance (% available, % held) differs from its postings (%, %)',
      NEW.id, row_now.available, row_now.held, row_now.posted_available, row_now.posted_held
      USING ERRCODE = 'check_violation', CONSTRAINT = 'billing_account_balance_follows_postings';
  END IF;
  RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER billing_account_balance_follows_postings
  AFTER INSERT OR UPDATE OF available, held ON billing_account
  DEFERRABLE INITIALLY DEFERRED
  FOR EACH ROW WHEN (NEW.kind <> 'system')
  EXECUTE FUNCTION billing_account_balance_follows_postings();

CREATE FUNCTION billing_account_kind_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'account %: kind never changes (% -> %)', OLD.id, OLD.kind, NEW.kind
    USING ERRCODE = 'check_violation', CONSTRAINT = 'billing_account_kind_immutable';
END
$$;

CREATE TRIGGER billing_account_kind_immutable
  BEFORE UPDATE OF kind ON billing_account
  FOR EACH ROW WHEN (OLD.kind IS DISTINCT FROM NEW.kind)
  EXECUTE FUNCTION billing_account_kind_immutable();
"""

BACKWARD = """
DROP TRIGGER billing_account_kind_immutable ON billing_account;
DROP FUNCTION billing_account_kind_immutable();
DROP TRIGGER billing_account_balance_follows_postings ON billing_account;
DROP FUNCTION billing_account_balance_follows_postings();
DROP TRIGGER billing_posting_post_balances ON billing_posting;
DROP FUNCTION billing_posting_post_balances();
ALTER TABLE billing_account DROP COLUMN posted_available, DROP COLUMN posted_held;
"""


class Migration(migrations.Migration):
    dependencies = [("billing", "0012_drop_redundant_indexes")]

    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
