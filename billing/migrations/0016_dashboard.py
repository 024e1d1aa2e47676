"""The finance dashboard's data: five-minute snapshots of open holds, and a BRIN index on journal time.

The BRIN index (``created_at``, autosummarize) serves time ranges over the journal — revenue per
day, statements — for a few pages of index and almost no cost per insert (bench/index_cost.py).
Built concurrently: no write lock on a big table.
"""

from __future__ import annotations

from django.contrib.postgres.indexes import BrinIndex
from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("billing", "0015_posting_account_journal_index")]

    operations = [
        migrations.CreateModel(
            name="LedgerSnapshot",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("at", models.DateTimeField(unique=True)),
                ("open_holds", models.BigIntegerField()),
                ("held", models.BigIntegerField()),
            ],
        ),
        AddIndexConcurrently(
            model_name="journalentry",
            index=BrinIndex(autosummarize=True, fields=["created_at"], name="billing_journal_created_brin"),
        ),
    ]
