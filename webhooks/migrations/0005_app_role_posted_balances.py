"""The app role may not write an account's posted sums (billing/0013): only the postings trigger does.

Table-level INSERT/UPDATE on ``billing_account`` becomes column-level on every other column, so a
compromised app role can neither set ``posted_available`` nor insert an account that starts with
them set. A later migration adding a column to ``billing_account`` must grant it here too.
"""

from __future__ import annotations

from typing import Any

from django.db import migrations


def _role_name() -> str:
    from django.conf import settings

    role = str(getattr(settings, "DATABASE_APP_ROLE", "finn_app"))
    if not role.replace("_", "").isalnum():
        raise ValueError("DATABASE_APP_ROLE must be a plain identifier")
    return role


PROTECTED = ("posted_available", "posted_held")


def restrict(apps: Any, schema_editor: Any) -> None:
    role = _role_name()
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'billing_account'"
            " AND table_schema = current_schema() ORDER BY ordinal_position"
        )
        columns = [name for (name,) in cursor.fetchall() if name not in PROTECTED]
        listed = ", ".join(columns)
        cursor.execute(f"REVOKE INSERT, UPDATE ON billing_account FROM {role}")
        cursor.execute(f"GRANT INSERT ({listed}), UPDATE ({listed}) ON billing_account TO {role}")


def unrestrict(apps: Any, schema_editor: Any) -> None:
    role = _role_name()
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(f"GRANT INSERT, UPDATE ON billing_account TO {role}")


class Migration(migrations.Migration):
    dependencies = [
        ("webhooks", "0004_app_role_grants"),
        ("billing", "0013_balances_follow_postings"),
    ]

    operations = [migrations.RunPython(restrict, unrestrict)]
