"""An account's postings in journal order: (account_id, journal_entry_id) replaces (account_id, bucket).

No query read by bucket through the old index; statements, point-in-time balances and the
admin's recent movements read an account's postings by journal. Same number of indexes per
posting (the hot path's cost is unchanged). Built concurrently: no write lock on a big table.
"""

from __future__ import annotations

from django.contrib.postgres.operations import AddIndexConcurrently, RemoveIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("billing", "0014_hot_path_posted_sums")]

    operations = [
        RemoveIndexConcurrently(model_name="posting", name="billing_posting_account_idx"),
        AddIndexConcurrently(
            model_name="posting",
            index=models.Index(fields=["account", "journal_entry"], name="billing_posting_account_idx"),
        ),
    ]
