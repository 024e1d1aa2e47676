"""Metered entries by model and time (estimate accuracy per model), built concurrently.

Partial (``model <> ''``): a reserve with a raw estimate adds nothing to it.
"""

from __future__ import annotations

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("billing", "0020_validate_metering_checks")]

    operations = [
        AddIndexConcurrently(
            model_name="billingentry",
            index=models.Index(
                fields=["model", "created_at"], condition=~models.Q(model=""), name="billing_entry_model_idx"
            ),
        ),
    ]
