"""The "Finance" group: sees the ledger, finalizes and voids entries, replays dead letters.

Lives in the last app of the dependency chain so every model's permissions exist.
"""

from __future__ import annotations

from typing import Any

from django.db import migrations

FINANCE_PERMISSIONS = [
    ("billing", "finalize_billingentry"),
    ("billing", "void_billingentry"),
    ("webhooks", "change_webhookevent"),
    *[
        (app, f"view_{model}")
        for app, model in [
            ("billing", "account"),
            ("billing", "billingentry"),
            ("billing", "finalizedeadletter"),
            ("billing", "journalentry"),
            ("billing", "posting"),
            ("billing", "dailyspend"),
            ("billing", "subscription"),
            ("billing", "boostpurchase"),
            ("billing", "badgepurchase"),
            ("finn", "auditevent"),
            ("credits", "creditnote"),
            ("credits", "x402payment"),
            ("credits", "x402quote"),
            ("credits", "usednonce"),
            ("webhooks", "webhookevent"),
            ("webhooks", "webhookdeadletter"),
        ]
    ],
]


def create_finance_group(apps: Any, schema_editor: Any) -> None:
    from django.contrib.auth.management import create_permissions

    # Permissions are normally created after all migrations; make sure they exist now.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    group_model = apps.get_model("auth", "Group")
    permission_model = apps.get_model("auth", "Permission")
    group, _ = group_model.objects.get_or_create(name="Finance")
    for app_label, codename in FINANCE_PERMISSIONS:
        group.permissions.add(permission_model.objects.get(content_type__app_label=app_label, codename=codename))


def remove_finance_group(apps: Any, schema_editor: Any) -> None:
    apps.get_model("auth", "Group").objects.filter(name="Finance").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("webhooks", "0002_dead_letters"),
        ("billing", "0010_finance_permissions"),
        ("credits", "0006_x402"),
        ("finn", "0007_waitlist_csp_reports"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_finance_group, remove_finance_group)]
