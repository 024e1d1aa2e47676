"""A held reserve's estimate may grow (entry_extend), and only grow, and only while it is held.

Replaces billing_entry_guard_update (billing/0002): account and actual cost stay immutable, the
estimate may change only from RESERVE_HELD to RESERVE_HELD and only upwards; the allowed
transitions are unchanged.
"""

from __future__ import annotations

from django.db import migrations

FUNCTION = """
CREATE OR REPLACE FUNCTION billing_entry_guard_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.account_id IS DISTINCT FROM OLD.account_id
     OR (NEW.estimated_cost IS DISTINCT FROM OLD.estimated_cost
         AND NOT ({grows}))
     OR (OLD.actual_cost IS NOT NULL AND NEW.actual_cost IS DISTINCT FROM OLD.actual_cost) THEN
    RAISE EXCEPTION 'billing entry %: account, estimate and actual cost are immutable{but}', OLD.id
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
"""
GROWS = "OLD.state = 'RESERVE_HELD' AND NEW.state = 'RESERVE_HELD' AND NEW.estimated_cost > OLD.estimated_cost"

FORWARD = FUNCTION.format(grows=GROWS, but=" (a held estimate may only grow)")
BACKWARD = FUNCTION.format(grows="false", but="")


class Migration(migrations.Migration):
    dependencies = [("billing", "0017_outbound_webhooks")]

    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
