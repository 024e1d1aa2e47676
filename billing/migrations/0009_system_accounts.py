"""Create the system accounts up front (runtime creation stays as a fallback).

System accounts keep no balance row; their balance is the sum of their postings.
"""

from __future__ import annotations

from django.db import migrations

CODES = ("system:revenue", "treasury:usdc_received", "system:credit_notes", "system:fx_clearing")


def create(apps, schema_editor):  # type: ignore[no-untyped-def]
    account = apps.get_model("billing", "Account")
    for code in CODES:
        account.objects.get_or_create(code=code, defaults={"kind": "system", "name": code})


class Migration(migrations.Migration):
    dependencies = [("billing", "0008_webhooks_domain")]
    operations = [migrations.RunPython(create, migrations.RunPython.noop)]
