"""A billing entry's fencing token never decreases (a stale lock holder's
write is refused by its conditional UPDATE; this trigger backs that up for
any other writer)."""

from __future__ import annotations

from django.db import migrations

SQL = """
CREATE OR REPLACE FUNCTION billing_entry_fence_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.fence_token < OLD.fence_token THEN
    RAISE EXCEPTION 'billing entry %: fencing token may not go back from % to %',
      OLD.id, OLD.fence_token, NEW.fence_token
      USING ERRCODE = 'check_violation', CONSTRAINT = 'billing_billingentry_fence_monotonic';
  END IF;
  RETURN NEW;
END
$$;

CREATE TRIGGER billing_billingentry_fence_guard
  BEFORE UPDATE OF fence_token ON billing_billingentry
  FOR EACH ROW EXECUTE FUNCTION billing_entry_fence_guard();
"""

REVERSE_SQL = """
DROP TRIGGER IF EXISTS billing_billingentry_fence_guard ON billing_billingentry;
DROP FUNCTION IF EXISTS billing_entry_fence_guard();
"""


class Migration(migrations.Migration):
    dependencies = [("billing", "0003_finalize_fencing")]
    operations = [migrations.RunSQL(SQL, REVERSE_SQL)]
