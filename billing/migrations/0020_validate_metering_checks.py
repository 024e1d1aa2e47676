"""Validate 0019's two CHECKs: a scan under SHARE UPDATE EXCLUSIVE, so writes go on meanwhile."""

from __future__ import annotations

import importlib

from django.db import migrations

metered = importlib.import_module("billing.migrations.0019_metered_entries")


class Migration(migrations.Migration):
    dependencies = [("billing", "0019_metered_entries")]

    operations = [
        migrations.RunSQL(f"ALTER TABLE billing_billingentry VALIDATE CONSTRAINT {name};", migrations.RunSQL.noop)
        for name in metered.CONSTRAINTS
    ]
