"""Real headless Chromium (Debian's package) against a live finn, the policy enforced.

- the waitlist page loads, its form is submitted, zero CSP violations, a signup is stored;
- an injected inline script is blocked and its report arrives at /api/v1/csp-report;
- a finance user signs in to the admin with the password only and is refused the void; after
  entering the TOTP code the void of a FINALIZE_FAILED entry goes through with a reason, and the
  balance and the audit row (actor, IP, factor) change; a user without the permission does not
  see the action.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.utils import timezone

from billing.models import Account, BillingEntry
from billing.states import EntryState
from finn.models import AuditEvent, CspReport, WaitlistSignup
from tests.billing.helpers import entry_in_state
from tests.browser.conftest import csp_console
from tests.second_factor import current_token, totp_device


@pytest.mark.django_db(transaction=True)
def test_waitlist_page_under_the_enforced_policy_has_no_violations_and_stores_the_signup(
    https_live_server, enforced, page
) -> None:
    # when
    response = page.goto(f"{https_live_server}/waitlist/")
    assert response is not None
    assert "'nonce-" in response.headers["content-security-policy"]
    assert page.evaluate("document.documentElement.dataset.nonceScript") == "ran"  # the nonce'd script ran
    page.fill("#email", "Grace@Example.com")
    page.fill("#wallet", "0x" + "c3" * 20)
    page.click("#submit")
    page.wait_for_selector("#thanks")
    # then
    assert page.evaluate("window.__cspViolations") == []
    assert csp_console(page) == []
    signup = WaitlistSignup.objects.get()
    assert (signup.email, signup.wallet) == ("grace@example.com", "0x" + "c3" * 20)
    # the stylesheet (a static file) applied: the card has its background
    assert page.eval_on_selector(".card", "e => getComputedStyle(e).borderRadius") == "16px"


@pytest.mark.django_db(transaction=True)
def test_an_injected_inline_script_is_blocked_and_reported(https_live_server, enforced, page) -> None:
    page.goto(f"{https_live_server}/waitlist/")
    page.evaluate(
        "() => { const s = document.createElement('script'); s.textContent = 'window.__pwned = 1';"
        " document.body.appendChild(s); }"
    )
    assert page.evaluate("window.__pwned") is None  # blocked
    deadline = time.monotonic() + 30  # the browser's reporting service posts it shortly
    while time.monotonic() < deadline and not CspReport.objects.exists():
        time.sleep(0.25)
    report = CspReport.objects.first()
    assert report is not None, "no CSP report arrived"
    assert report.violated_directive.startswith("script-src")
    assert report.document_uri.endswith("/waitlist/")
    assert page.evaluate("window.__cspViolations.length") >= 1


def _login(page: Any, base: str, username: str, password: str) -> None:
    page.goto(f"{base}/admin/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    page.wait_for_selector("#site-name")


def _start_void(page: Any, base: str, entry_id: str) -> None:
    page.goto(f"{base}/admin/billing/billingentry/?state__exact=FINALIZE_FAILED")
    page.check(f"input.action-select[value='{entry_id}']")
    page.select_option("select[name=action]", "void_entries")
    page.click("button[name=index]")


@pytest.mark.django_db(transaction=True)
def test_finance_user_voids_a_poison_entry_in_the_admin(https_live_server, enforced, page, make_account) -> None:
    # given
    customer = make_account(10_000)
    poison = entry_in_state(EntryState.FINALIZE_FAILED, account_id=customer.pk, now=timezone.now(), actual=700)
    finance = User.objects.create_user("finny", password="finance-pass-1", is_staff=True)
    finance.groups.add(Group.objects.get(name="Finance"))
    before = Account.objects.get(pk=customer.pk).available
    device = totp_device(finance)
    # when: signed in with the password only, the void is refused
    _login(page, https_live_server, "finny", "finance-pass-1")
    _start_void(page, https_live_server, poison)
    page.wait_for_selector("#second-factor-refused")
    assert BillingEntry.objects.get(pk=poison).state == EntryState.FINALIZE_FAILED
    # when: the code from the authenticator is entered, the same void goes through
    page.click("#verify-link")
    page.fill("#id_otp_token", current_token(device))
    page.click("#second-factor-submit")
    page.wait_for_selector("#site-name")
    _start_void(page, https_live_server, poison)
    page.wait_for_selector("#confirm-entries")
    assert "actual cost refunded" in page.inner_text("#confirm-entries")
    page.fill("#id_reason", "duplicate charge, ticket 981")
    page.click("#confirm-submit")
    page.wait_for_selector(".messagelist")
    # then
    assert BillingEntry.objects.get(pk=poison).state == EntryState.VOIDED
    assert Account.objects.get(pk=customer.pk).available == before + 700
    audit = AuditEvent.objects.get(event_type="billing_void", billing_entry_id=poison)
    assert (audit.actor, audit.reason) == ("finny", "duplicate charge, ticket 981")
    assert audit.payload["by"] == {"actor": "finny", "ip": "127.0.0.1", "second_factor": "totp"}
    page.goto(f"{https_live_server}/admin/finn/auditevent/?event_type__exact=billing_void")
    assert "finny" in page.inner_text("#result_list")
    assert page.evaluate("window.__cspViolations") == []  # the admin runs under the same policy


@pytest.mark.django_db(transaction=True)
def test_a_user_without_the_permission_does_not_see_the_void_action(
    https_live_server, enforced, page, make_account
) -> None:
    customer = make_account(10_000)
    entry_in_state(EntryState.FINALIZE_FAILED, account_id=customer.pk, now=timezone.now())
    viewer = User.objects.create_user("viewer", password="viewer-pass-1", is_staff=True)
    viewer.user_permissions.add(*Group.objects.get(name="Finance").permissions.filter(codename__startswith="view_"))
    _login(page, https_live_server, "viewer", "viewer-pass-1")
    page.goto(f"{https_live_server}/admin/billing/billingentry/")
    options = page.eval_on_selector_all("select[name=action] option", "els => els.map(e => e.value)")
    assert "void_entries" not in options
    assert "finalize_by_hand" not in options
