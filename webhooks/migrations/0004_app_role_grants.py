"""Least privilege for the running app: the role it connects as cannot rewrite history.

Migrations run as the owner role (the tables' owner); web, workers and beat connect as
``DATABASE_APP_ROLE`` (default ``finn_app``). That role reads and writes the working tables,
but may only INSERT and SELECT the journal, its postings and the audit log: no UPDATE, DELETE
or TRUNCATE (besides filling the audit hash chain, two columns, once — a trigger checks that).
The role is created here when missing (local and test clusters); in production create it first
(``CREATE ROLE finn_app LOGIN PASSWORD …``) and this migration only grants.
Lives in the last app of the dependency chain, so every table exists; later tables get the
working privileges through ALTER DEFAULT PRIVILEGES.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import migrations

APPEND_ONLY = ("billing_journalentry", "billing_posting", "finn_auditevent")


def _role() -> str:
    role = str(getattr(settings, "DATABASE_APP_ROLE", "finn_app"))
    if not role.replace("_", "").isalnum():
        raise ValueError("DATABASE_APP_ROLE must be a plain identifier")
    return role


def grant(apps: Any, schema_editor: Any) -> None:
    role = _role()
    statements = [
        f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN CREATE ROLE {role} LOGIN; END IF; END $$",
        f"GRANT CONNECT ON DATABASE {schema_editor.connection.settings_dict['NAME']} TO {role}",
        f"GRANT USAGE ON SCHEMA public TO {role}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}",
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {role}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {role}",
        f"REVOKE UPDATE, DELETE, TRUNCATE ON {', '.join(APPEND_ONLY)} FROM {role}",
        f"GRANT UPDATE (chain_prev, chain_hash) ON finn_auditevent TO {role}",
    ]
    with schema_editor.connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)


def revoke(apps: Any, schema_editor: Any) -> None:
    role = _role()
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON TABLES FROM {role}")
        cursor.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON SEQUENCES FROM {role}")
        cursor.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}")
        cursor.execute(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {role}")


class Migration(migrations.Migration):
    dependencies = [
        ("webhooks", "0003_finance_group"),
        ("billing", "0010_finance_permissions"),
        ("credits", "0007_agent_accounts"),
        ("finn", "0008_feature_flags_allowlist"),
        ("nft", "0001_personalities_onboarding"),
    ]

    operations = [migrations.RunPython(grant, revoke)]
