"""The audit log is append-only: PostgreSQL refuses UPDATE and DELETE.

``finn_reject_mutation()`` is shared by every append-only table (billing's
journal and postings use it too). TRUNCATE is left to operators (and to the
test runner's flush); no application code path issues it.
"""

from __future__ import annotations

from django.db import migrations

SQL = """
CREATE OR REPLACE FUNCTION finn_reject_mutation() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
    USING ERRCODE = 'restrict_violation';
END
$$;

CREATE TRIGGER finn_auditevent_append_only
  BEFORE UPDATE OR DELETE ON finn_auditevent
  FOR EACH ROW EXECUTE FUNCTION finn_reject_mutation();
"""

REVERSE_SQL = """
DROP TRIGGER IF EXISTS finn_auditevent_append_only ON finn_auditevent;
DROP FUNCTION IF EXISTS finn_reject_mutation();
"""


class Migration(migrations.Migration):
    dependencies = [("finn", "0001_initial")]
    operations = [migrations.RunSQL(SQL, REVERSE_SQL)]
