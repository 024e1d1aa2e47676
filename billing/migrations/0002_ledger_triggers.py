"""Invariants a CHECK cannot hold, enforced by PostgreSQL triggers.

1. Zero-sum journals: at commit, the postings of every journal entry sum to
   zero per denomination (a DEFERRABLE INITIALLY DEFERRED constraint trigger,
   so the postings of one entry may be inserted in any order).
2. Journal entries and postings are append-only (no UPDATE, no DELETE).
3. A billing entry moves only along the edges of billing.states.TRANSITIONS;
   its account, estimate and (once set) actual cost never change; entries are
   never deleted.

The transition list below is a frozen copy of billing.states.TRANSITIONS
(migrations must not import live code); tests/billing/test_db_invariants.py
checks every pair against the dict so the two cannot drift apart.
"""

from __future__ import annotations

from django.db import migrations

SQL = """
CREATE OR REPLACE FUNCTION billing_journal_zero_sum() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  bad_denomination text;
  bad_total numeric;
BEGIN
  SELECT p.denomination, SUM(p.delta)
    INTO bad_denomination, bad_total
    FROM billing_posting p
   WHERE p.journal_entry_id = NEW.journal_entry_id
   GROUP BY p.denomination
  HAVING SUM(p.delta) <> 0
   LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION 'journal entry % does not sum to zero in %: %',
      NEW.journal_entry_id, bad_denomination, bad_total
      USING ERRCODE = 'check_violation', CONSTRAINT = 'billing_posting_journal_zero_sum';
  END IF;
  RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER billing_posting_journal_zero_sum
  AFTER INSERT ON billing_posting
  DEFERRABLE INITIALLY DEFERRED
  FOR EACH ROW EXECUTE FUNCTION billing_journal_zero_sum();

CREATE TRIGGER billing_posting_append_only
  BEFORE UPDATE OR DELETE ON billing_posting
  FOR EACH ROW EXECUTE FUNCTION finn_reject_mutation();

CREATE TRIGGER billing_journalentry_append_only
  BEFORE UPDATE OR DELETE ON billing_journalentry
  FOR EACH ROW EXECUTE FUNCTION finn_reject_mutation();

CREATE TRIGGER billing_billingentry_no_delete
  BEFORE DELETE ON billing_billingentry
  FOR EACH ROW EXECUTE FUNCTION finn_reject_mutation();

CREATE OR REPLACE FUNCTION billing_entry_guard_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.account_id IS DISTINCT FROM OLD.account_id
     OR NEW.estimated_cost IS DISTINCT FROM OLD.estimated_cost
     OR (OLD.actual_cost IS NOT NULL AND NEW.actual_cost IS DISTINCT FROM OLD.actual_cost) THEN
    RAISE EXCEPTION 'billing entry %: account, estimate and actual cost are immutable', OLD.id
      USING ERRCODE = 'check_violation', CONSTRAINT = 'billing_billingentry_immutable_amounts';
  END IF;
  IF NEW.state IS DISTINCT FROM OLD.state AND (OLD.state, NEW.state) NOT IN (
      ('IDLE', 'RESERVE_HELD'),
      ('RESERVE_HELD', 'COMMITTED'),
      ('RESERVE_HELD', 'RELEASED'),
      ('COMMITTED', 'FINALIZE_PENDING'),
      ('COMMITTED', 'VOIDED'),
      ('FINALIZE_PENDING', 'FINALIZE_ACKED'),
      ('FINALIZE_PENDING', 'FINALIZE_FAILED'),
      ('FINALIZE_FAILED', 'FINALIZE_ACKED'),
      ('FINALIZE_FAILED', 'VOIDED')
  ) THEN
    RAISE EXCEPTION 'billing entry %: transition % -> % is not allowed', OLD.id, OLD.state, NEW.state
      USING ERRCODE = 'check_violation', CONSTRAINT = 'billing_billingentry_allowed_transition';
  END IF;
  RETURN NEW;
END
$$;

CREATE TRIGGER billing_billingentry_guard_update
  BEFORE UPDATE ON billing_billingentry
  FOR EACH ROW EXECUTE FUNCTION billing_entry_guard_update();
"""

REVERSE_SQL = """
DROP TRIGGER IF EXISTS billing_billingentry_guard_update ON billing_billingentry;
DROP FUNCTION IF EXISTS billing_entry_guard_update();
DROP TRIGGER IF EXISTS billing_billingentry_no_delete ON billing_billingentry;
DROP TRIGGER IF EXISTS billing_journalentry_append_only ON billing_journalentry;
DROP TRIGGER IF EXISTS billing_posting_append_only ON billing_posting;
DROP TRIGGER IF EXISTS billing_posting_journal_zero_sum ON billing_posting;
DROP FUNCTION IF EXISTS billing_journal_zero_sum();
"""


class Migration(migrations.Migration):
    dependencies = [("billing", "0001_initial"), ("finn", "0002_audit_append_only")]
    operations = [migrations.RunSQL(SQL, REVERSE_SQL)]
