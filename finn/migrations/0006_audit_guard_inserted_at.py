"""The chain-fill exception of the audit guard also freezes inserted_at."""

from __future__ import annotations

from django.db import migrations

SQL = """
CREATE OR REPLACE FUNCTION finn_auditevent_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'UPDATE'
     AND OLD.chain_hash IS NULL AND NEW.chain_hash IS NOT NULL
     AND (NEW.sequence, NEW.schema_version, NEW.event_type, NEW.billing_entry_id, NEW.account_id,
          NEW.correlation_id, NEW.actor, NEW.reason, NEW.payload, NEW.crc32, NEW.created_at, NEW.inserted_at)
         IS NOT DISTINCT FROM
         (OLD.sequence, OLD.schema_version, OLD.event_type, OLD.billing_entry_id, OLD.account_id,
          OLD.correlation_id, OLD.actor, OLD.reason, OLD.payload, OLD.crc32, OLD.created_at, OLD.inserted_at) THEN
    RETURN NEW;
  END IF;
  RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
    USING ERRCODE = 'restrict_violation';
END
$$;

DROP TRIGGER IF EXISTS finn_auditevent_append_only ON finn_auditevent;
CREATE TRIGGER finn_auditevent_append_only
  BEFORE UPDATE OR DELETE ON finn_auditevent
  FOR EACH ROW EXECUTE FUNCTION finn_auditevent_guard();
"""


class Migration(migrations.Migration):
    dependencies = [("finn", "0005_audit_inserted_at")]
    operations = [migrations.RunSQL(SQL, migrations.RunSQL.noop)]
