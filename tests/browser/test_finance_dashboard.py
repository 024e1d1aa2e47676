"""The finance dashboard in Chromium, the policy enforced: tiles and server-drawn SVG charts render,
0 CSP violations, no script from anywhere (the charts are markup)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, User
from django.utils import timezone

from billing.services import ledger_snapshot_record
from billing.states import EntryState
from tests.billing.helpers import entry_in_state
from tests.browser.conftest import csp_console

pytestmark = pytest.mark.django_db(transaction=True)


def test_finance_sees_the_dashboard_with_its_charts(https_live_server, enforced, page, make_account) -> None:
    # given: revenue today and an open hold, one snapshot
    customer = make_account(10_000_000)
    now = timezone.now()
    entry_in_state(EntryState.COMMITTED, account_id=customer.pk, now=now, estimate=2_000_000, actual=1_250_000)
    entry_in_state(EntryState.RESERVE_HELD, account_id=customer.pk, now=now, estimate=500_000)
    ledger_snapshot_record(now=now)
    finance = User.objects.create_user("finny", password="finance-pass-1", is_staff=True)
    finance.groups.add(Group.objects.get(name="Finance"))
    # when: signed in, from the admin index's link
    page.goto(f"{https_live_server}/admin/login/")
    page.fill("#id_username", "finny")
    page.fill("#id_password", "finance-pass-1")
    page.click("input[type=submit]")
    page.click("#dashboard-link a")
    page.wait_for_selector("#finance-dashboard")
    # then
    text = page.inner_text("#finance-dashboard")
    assert "Held now\n0.500000 USD" in text
    assert "Revenue today (UTC)\n1.250000 USD" in text
    assert page.eval_on_selector_all("svg.finn-chart", "els => els.length") == 2
    assert page.eval_on_selector_all("svg.finn-chart rect.bar", "els => els.length") == 30
    tallest = page.eval_on_selector_all("rect.bar", "els => Math.max(...els.map(e => e.getBBox().height))")
    assert tallest > 100  # today's bar is drawn, the chart's full height
    assert page.eval_on_selector_all("svg.finn-chart circle.point", "els => els.length") == 1
    assert page.eval_on_selector_all("script:not([src])", "els => els.length") == 0
    png = page.screenshot(full_page=True)
    assert len(png) > 20_000  # a rendered page (a blank one is ~4 kB)
    assert page.evaluate("window.__cspViolations") == []
    assert csp_console(page) == []
