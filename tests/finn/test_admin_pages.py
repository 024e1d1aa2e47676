"""Every model in the admin: its list answers 200 for finance staff, and its add form where adding is allowed."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.urls import reverse

from tests.second_factor import verified_client


@pytest.mark.django_db
def test_every_admin_list_and_add_page_answers(make_account) -> None:
    make_account(1_000)
    user = get_user_model().objects.create_superuser("pages-admin", "p@example.com", "pw")
    client = verified_client(user)
    failures = []
    for model, model_admin in admin.site._registry.items():
        meta = model._meta
        listing = client.get(reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist"))
        if listing.status_code != 200:
            failures.append((meta.label, "changelist", listing.status_code))
        request = listing.wsgi_request
        if model_admin.has_add_permission(request):
            form = client.get(reverse(f"admin:{meta.app_label}_{meta.model_name}_add"))
            if form.status_code != 200:
                failures.append((meta.label, "add", form.status_code))
    assert not failures, failures
    assert len(admin.site._registry) >= 20
