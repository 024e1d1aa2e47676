"""Reserve, commit and release stay one round trip each: the number of statements is pinned."""

from __future__ import annotations

import pytest

from billing import services


@pytest.mark.django_db(transaction=True)
def test_reserve_takes_one_statement(make_account, now, django_assert_num_queries) -> None:
    # given: no wrapping transaction, as in a request
    funded = make_account(10_000)
    # when / then: one call of billing_entry_reserve (entry, account row, journal, postings, audit)
    with django_assert_num_queries(1):
        services.entry_reserve(account_id=funded.pk, estimated_cost=100, correlation_id="c", now=now)


@pytest.mark.django_db(transaction=True)
def test_commit_takes_one_statement(make_account, now, django_assert_num_queries) -> None:
    # given
    funded = make_account(10_000)
    entry_id = services.entry_reserve(account_id=funded.pk, estimated_cost=100, correlation_id="c", now=now).entry.id
    services.system_account_id(services.SYSTEM_REVENUE)  # cached per process once committed
    # when / then: one call of billing_entry_commit
    with django_assert_num_queries(1):
        services.entry_commit(entry_id=entry_id, actual_cost=60, now=now)


@pytest.mark.django_db(transaction=True)
def test_release_takes_one_statement(make_account, now, django_assert_num_queries) -> None:
    # given
    funded = make_account(10_000)
    entry_id = services.entry_reserve(account_id=funded.pk, estimated_cost=100, correlation_id="c", now=now).entry.id
    # when / then: one call of billing_entry_release
    with django_assert_num_queries(1):
        services.entry_release(entry_id=entry_id, reason="user_cancel", now=now)


@pytest.mark.django_db
def test_inside_a_transaction_the_call_is_a_savepoint(make_account, now, django_assert_num_queries) -> None:
    # given: the test's wrapping transaction stands for a caller's
    funded = make_account(10_000)
    # when / then: SAVEPOINT, the call, RELEASE (a refusal rolls back only the savepoint)
    with django_assert_num_queries(3):
        services.entry_reserve(account_id=funded.pk, estimated_cost=100, correlation_id="c", now=now)
