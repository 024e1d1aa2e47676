"""Reserve and commit stay short: the number of statements is pinned."""

from __future__ import annotations

import pytest

from billing import services


@pytest.mark.django_db
def test_reserve_takes_four_statements(make_account, now, django_assert_num_queries) -> None:
    # given
    funded = make_account(10_000)
    # when / then: INSERT entry, UPDATE account, INSERT journal+postings (one CTE),
    # INSERT audit; plus the SAVEPOINT/RELEASE of the test's wrapping transaction.
    with django_assert_num_queries(6):
        services.entry_reserve(account_id=funded.pk, estimated_cost=100, correlation_id="c", now=now)


@pytest.mark.django_db
def test_commit_takes_four_statements(
    make_account, now, django_assert_num_queries, django_capture_on_commit_callbacks
) -> None:
    # given
    funded = make_account(10_000)
    entry_id = services.entry_reserve(account_id=funded.pk, estimated_cost=100, correlation_id="c", now=now).entry.id
    with django_capture_on_commit_callbacks(execute=True):
        services.system_account_id(services.SYSTEM_REVENUE)  # cached per process once committed
    # when / then: UPDATE entry (CAS), UPDATE account, INSERT journal+postings (one CTE),
    # INSERT audit; plus SAVEPOINT/RELEASE.
    with django_assert_num_queries(6):
        services.entry_commit(entry_id=entry_id, actual_cost=60, now=now)
