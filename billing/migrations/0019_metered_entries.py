"""Metered entries: the model and price version a hold was computed at, and the usage it was charged for.

Four columns (nullable or with a constant default: no table rewrite). The two CHECKs are added
NOT VALID here and validated by 0020 in its own transaction, which scans the table without
blocking writes. A trigger keeps the
metering immutable once written: model and price version are set by the reserve, usage once by
the commit. The hot-path functions take the new values (reserve: model and price version;
commit: the tokens), and the audit payloads they build carry them, so the CRC and the hash chain
cover the price an entry was charged at.
"""

from __future__ import annotations

import importlib

from django.db import migrations, models

hot_path = importlib.import_module("billing.migrations.0011_hot_path_functions")
posted = importlib.import_module("billing.migrations.0014_hot_path_posted_sums")

CONSTRAINTS = {
    "billing_billingentry_model_iff_price_version": (
        "(model = '' AND price_version IS NULL) OR (model <> '' AND price_version IS NOT NULL)",
        models.CheckConstraint(
            condition=(models.Q(model="") & models.Q(price_version__isnull=True))
            | (~models.Q(model="") & models.Q(price_version__isnull=False)),
            name="billing_billingentry_model_iff_price_version",
        ),
    ),
    "billing_billingentry_usage_priced": (
        "(usage_input_tokens IS NULL AND usage_output_tokens IS NULL)"
        " OR (usage_input_tokens >= 0 AND usage_output_tokens >= 0 AND price_version IS NOT NULL)",
        models.CheckConstraint(
            condition=(models.Q(usage_input_tokens__isnull=True) & models.Q(usage_output_tokens__isnull=True))
            | models.Q(usage_input_tokens__gte=0, usage_output_tokens__gte=0, price_version__isnull=False),
            name="billing_billingentry_usage_priced",
        ),
    ),
}

GUARD = """
CREATE OR REPLACE FUNCTION billing_entry_metering_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.model IS DISTINCT FROM OLD.model OR NEW.price_version IS DISTINCT FROM OLD.price_version
     OR (OLD.usage_input_tokens IS NOT NULL AND NEW.usage_input_tokens IS DISTINCT FROM OLD.usage_input_tokens)
     OR (OLD.usage_output_tokens IS NOT NULL AND NEW.usage_output_tokens IS DISTINCT FROM OLD.usage_output_tokens)
  THEN
    RAISE EXCEPTION 'billing entry %: model, price version and usage are written once', OLD.id
      USING ERRCODE = 'check_violation', CONSTRAINT = 'billing_billingentry_immutable_metering';
  END IF;
  RETURN NEW;
END
$$;
CREATE TRIGGER billing_entry_metering_guard BEFORE UPDATE OF model, price_version, usage_input_tokens,
  usage_output_tokens ON billing_billingentry FOR EACH ROW EXECUTE FUNCTION billing_entry_metering_guard();
"""
UNGUARD = """
DROP TRIGGER IF EXISTS billing_entry_metering_guard ON billing_billingentry;
DROP FUNCTION IF EXISTS billing_entry_metering_guard();
"""

# The audit payload (canonical JSON, keys sorted) of a metered entry adds "model" and
# "price_version" after "from_state", and "usage" last.
AUDIT_EDITS = [
    (
        "    || ',\"from_state\":' || to_json(p_from)::text;\n",
        "    || ',\"from_state\":' || to_json(p_from)::text;\n"
        "  IF p_entry.price_version IS NOT NULL THEN\n"
        "    payload := payload || ',\"model\":' || to_json(p_entry.model::text)::text\n"
        "      || ',\"price_version\":' || to_json(p_entry.price_version::text)::text;\n"
        "  END IF;\n",
    ),
    (
        "  payload := payload || ',\"to_state\":' || to_json(p_entry.state::text)::text || '}';\n",
        "  payload := payload || ',\"to_state\":' || to_json(p_entry.state::text)::text;\n"
        "  IF p_entry.usage_input_tokens IS NOT NULL THEN\n"
        "    payload := payload || ',\"usage\":{\"input_tokens\":' || p_entry.usage_input_tokens::text\n"
        "      || ',\"output_tokens\":' || p_entry.usage_output_tokens::text || '}';\n"
        "  END IF;\n"
        "  payload := payload || '}';\n",
    ),
]
RESERVE_EDITS = [
    (
        "  p_exposure_limit bigint, p_audit_payload text, p_audit_crc varchar, p_bypass boolean\n)",
        "  p_exposure_limit bigint, p_audit_payload text, p_audit_crc varchar, p_bypass boolean,\n"
        "  p_model varchar, p_price_version bigint\n)",
    ),
    (
        "    release_reason, void_reason, voided_by, created_at, updated_at, fence_token, finalize_last_error)\n",
        "    release_reason, void_reason, voided_by, created_at, updated_at, fence_token, finalize_last_error,\n"
        "    model, price_version)\n",
    ),
    (
        "    p_expires, 0, p_idempotency_key, '', '', '', p_now, p_now, 0, '')\n",
        "    p_expires, 0, p_idempotency_key, '', '', '', p_now, p_now, 0, '', p_model, p_price_version)\n",
    ),
]
COMMIT_EDITS = [
    (
        "  p_finalize boolean, p_requested_actual bigint, p_bypass boolean\n)",
        "  p_finalize boolean, p_requested_actual bigint, p_bypass boolean, p_input_tokens bigint,\n"
        "  p_output_tokens bigint\n)",
    ),
    (
        "  UPDATE billing_billingentry b SET state = 'COMMITTED', updated_at = p_now, actual_cost = p_actual\n",
        "  UPDATE billing_billingentry b SET state = 'COMMITTED', updated_at = p_now, actual_cost = p_actual,\n"
        "    usage_input_tokens = p_input_tokens, usage_output_tokens = p_output_tokens\n",
    ),
]


def _edit(sql: str, edits: list[tuple[str, str]]) -> str:
    for old, new in edits:
        assert sql.count(old) == 1, old
        sql = sql.replace(old, new)
    return sql


OLD_RESERVE = posted._edited("RESERVE")
OLD_COMMIT = posted._edited("COMMIT")
DROP_NEW = """
DROP FUNCTION billing_entry_reserve(varchar, bigint, varchar, bigint, bigint, numeric, timestamptz, timestamptz,
  varchar, bigint, text, varchar, boolean, varchar, bigint);
DROP FUNCTION billing_entry_commit(varchar, bigint, bigint, timestamptz, bigint, boolean, bigint, boolean, bigint,
  bigint);
"""
FORWARD = (
    _edit(hot_path.AUDIT, AUDIT_EDITS)
    + _edit(OLD_RESERVE, RESERVE_EDITS)
    + _edit(OLD_COMMIT, COMMIT_EDITS)
    + GUARD
)
BACKWARD = UNGUARD + DROP_NEW + hot_path.AUDIT


class Migration(migrations.Migration):
    dependencies = [("billing", "0018_holds_grow")]

    operations = [
        migrations.AddField(
            model_name="billingentry",
            name="model",
            field=models.CharField(blank=True, db_default="", max_length=100),
        ),
        migrations.AddField(
            model_name="billingentry", name="price_version", field=models.BigIntegerField(blank=True, null=True)
        ),
        migrations.AddField(
            model_name="billingentry", name="usage_input_tokens", field=models.BigIntegerField(blank=True, null=True)
        ),
        migrations.AddField(
            model_name="billingentry", name="usage_output_tokens", field=models.BigIntegerField(blank=True, null=True)
        ),
        *(
            migrations.SeparateDatabaseAndState(
                database_operations=[
                    migrations.RunSQL(
                        f"ALTER TABLE billing_billingentry ADD CONSTRAINT {name} CHECK ({check}) NOT VALID;",
                        f"ALTER TABLE billing_billingentry DROP CONSTRAINT {name};",
                    )
                ],
                state_operations=[migrations.AddConstraint(model_name="billingentry", constraint=constraint)],
            )
            for name, (check, constraint) in CONSTRAINTS.items()
        ),
        migrations.RunSQL(FORWARD, BACKWARD),
    ]
