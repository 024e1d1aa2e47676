"""Agent budget policies, checked in the reserve's one round trip and in extend's transaction.

``billing_spend_policy_check`` runs after the account row is locked (the reserve's guarded
UPDATE, extend's), so concurrent reserves of one account are counted one after another and a
limit is exact. A refusal RAISEs ``policy_refused`` with DETAIL = JSON naming the rule, its limit,
what was used before this operation and when the window frees enough (``resets_at``; null when
waiting would not help). The 15-argument reserve of billing/0019 calls it; the old 13-argument one
(left for nodes of the previous release during a rolling deploy) does not: policies are new.
"""

import importlib

import django.contrib.postgres.fields
import django.db.models.deletion
from django.db import migrations, models


metered = importlib.import_module("billing.migrations.0019_metered_entries")

CHECK = """
CREATE OR REPLACE FUNCTION billing_spend_policy_check(
  p_account bigint, p_entry varchar, p_total bigint, p_added bigint, p_model varchar, p_now timestamptz,
  p_new_request boolean
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  pol billing_spendpolicy;
  w_requests bigint;
  w_spent numeric;
  resets timestamptz;
BEGIN
  SELECT * INTO pol FROM billing_spendpolicy s WHERE s.account_id = p_account;
  IF NOT FOUND THEN
    RETURN;
  END IF;
  IF pol.per_request_max IS NOT NULL AND p_total > pol.per_request_max THEN
    RAISE EXCEPTION 'policy_refused' USING DETAIL = json_build_object('rule', 'per_request_max',
      'limit', pol.per_request_max, 'used', p_total - p_added, 'resets_at', NULL)::text;
  END IF;
  IF pol.allowed_models IS NOT NULL AND NOT (coalesce(p_model, '') = ANY (pol.allowed_models)) THEN
    RAISE EXCEPTION 'policy_refused' USING DETAIL = json_build_object('rule', 'model_allowlist',
      'limit', NULL, 'used', NULL, 'resets_at', NULL, 'model', coalesce(p_model, ''))::text;
  END IF;
  IF pol.hourly_request_limit IS NULL AND pol.hourly_spend_limit IS NULL THEN
    RETURN;
  END IF;
  -- The rolling hour, this operation included (its entry is written already).
  SELECT count(*), COALESCE(sum(CASE WHEN e.state = 'RESERVE_HELD' THEN e.estimated_cost
                                     WHEN e.state IN ('RELEASED', 'VOIDED') THEN 0
                                     ELSE e.actual_cost END), 0)
    INTO w_requests, w_spent
    FROM billing_billingentry e
   WHERE e.account_id = p_account AND e.created_at > p_now - interval '1 hour';
  IF p_new_request AND pol.hourly_request_limit IS NOT NULL AND w_requests > pol.hourly_request_limit THEN
    SELECT e.created_at + interval '1 hour' INTO resets FROM billing_billingentry e
     WHERE e.account_id = p_account AND e.created_at > p_now - interval '1 hour' AND e.id <> p_entry
     ORDER BY e.created_at, e.id OFFSET w_requests - pol.hourly_request_limit - 1 LIMIT 1;
    RAISE EXCEPTION 'policy_refused' USING DETAIL = json_build_object('rule', 'hourly_requests',
      'limit', pol.hourly_request_limit, 'used', w_requests - 1, 'resets_at', resets)::text;
  END IF;
  IF pol.hourly_spend_limit IS NOT NULL AND w_spent > pol.hourly_spend_limit THEN
    -- When enough of the window's older spend has left it for this operation to fit.
    SELECT x.created_at + interval '1 hour' INTO resets FROM (
      SELECT e.created_at, sum(CASE WHEN e.state = 'RESERVE_HELD' THEN e.estimated_cost
                                    WHEN e.state IN ('RELEASED', 'VOIDED') THEN 0
                                    ELSE e.actual_cost END) OVER (ORDER BY e.created_at, e.id) AS gone
        FROM billing_billingentry e
       WHERE e.account_id = p_account AND e.created_at > p_now - interval '1 hour' AND e.id <> p_entry
    ) x WHERE x.gone >= w_spent - pol.hourly_spend_limit ORDER BY x.created_at LIMIT 1;
    RAISE EXCEPTION 'policy_refused' USING DETAIL = json_build_object('rule', 'hourly_spend',
      'limit', pol.hourly_spend_limit, 'used', w_spent - p_added, 'resets_at', resets)::text;
  END IF;
END $$;
"""
UNCHECK = "DROP FUNCTION IF EXISTS billing_spend_policy_check(bigint, varchar, bigint, bigint, varchar, timestamptz, boolean);"

RESERVE_0019 = metered._edit(metered.OLD_RESERVE, metered.RESERVE_EDITS)
INVARIANT = (
    "  IF acct.held < p_estimate AND NOT p_bypass THEN\n"
    "    RAISE EXCEPTION 'invariant_violation' USING DETAIL = 'reserve_within_allocation';\n"
    "  END IF;\n"
)
RESERVE = metered._edit(
    RESERVE_0019,
    [
        (
            INVARIANT,
            INVARIANT
            + "  PERFORM billing_spend_policy_check(p_account, p_id, p_estimate, p_estimate, p_model, p_now, true);\n",
        )
    ],
)


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0021_entry_model_index"),
    ]

    operations = [
        migrations.CreateModel(
            name="SpendPolicy",
            fields=[
                (
                    "account",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.PROTECT,
                        primary_key=True,
                        related_name="spend_policy",
                        serialize=False,
                        to="billing.account",
                    ),
                ),
                ("per_request_max", models.BigIntegerField(blank=True, null=True)),
                ("hourly_spend_limit", models.BigIntegerField(blank=True, null=True)),
                ("hourly_request_limit", models.IntegerField(blank=True, null=True)),
                (
                    "allowed_models",
                    django.contrib.postgres.fields.ArrayField(
                        base_field=models.CharField(max_length=100), blank=True, null=True, size=None
                    ),
                ),
                ("updated_at", models.DateTimeField()),
                ("updated_by", models.CharField(max_length=150)),
            ],
            options={
                "verbose_name_plural": "spend policies",
                "constraints": [
                    models.CheckConstraint(
                        condition=models.Q(
                            models.Q(("per_request_max__isnull", True), ("per_request_max__gte", 1), _connector="OR"),
                            models.Q(
                                ("hourly_spend_limit__isnull", True), ("hourly_spend_limit__gte", 1), _connector="OR"
                            ),
                            models.Q(
                                ("hourly_request_limit__isnull", True),
                                ("hourly_request_limit__gte", 1),
                                _connector="OR",
                            ),
                        ),
                        name="billing_spendpolicy_limits_positive",
                    )
                ],
            },
        ),
        migrations.RunSQL(CHECK + RESERVE, RESERVE_0019 + UNCHECK),
    ]
