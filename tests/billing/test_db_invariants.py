"""The database itself refuses what would break the ledger (raw SQL, no services)."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, connection, transaction

from billing import services
from billing.models import Account, Posting
from billing.states import CHARGED_STATES, TRANSITIONS, EntryState
from finn.models import AuditEvent

from .helpers import entry_in_state


def _raw(sql: str, params: list[object] | None = None) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params or [])


@pytest.mark.django_db(transaction=True)
def test_an_unbalanced_journal_is_rejected_at_commit(make_account) -> None:
    # given
    funded = make_account(1_000)
    # when / then
    with pytest.raises(IntegrityError, match="does not sum to zero"), transaction.atomic():
        _raw(
            "INSERT INTO billing_journalentry (event_type, correlation_id, rounding_direction, created_at) "
            "VALUES ('manual', 'c', '', now())"
        )
        _raw(
            "INSERT INTO billing_posting (journal_entry_id, account_id, bucket, delta, denomination) "
            "VALUES (currval('billing_journalentry_id_seq'), %s, 'available', 5, 'micro_usd')",
            [funded.pk],
        )
    assert Posting.objects.filter(delta=5).count() == 0


@pytest.mark.django_db(transaction=True)
def test_a_journal_balanced_across_denominations_only_is_rejected(make_account) -> None:
    # given: +5 µUSD against -5 µUSDC sums to zero only if denominations are mixed
    funded = make_account(1_000)
    # when / then
    with pytest.raises(IntegrityError, match="does not sum to zero"), transaction.atomic():
        _raw(
            "INSERT INTO billing_journalentry (event_type, correlation_id, rounding_direction, created_at) "
            "VALUES ('manual', 'c', '', now())"
        )
        for delta, denomination in ((5, "micro_usd"), (-5, "micro_usdc")):
            _raw(
                "INSERT INTO billing_posting (journal_entry_id, account_id, bucket, delta, denomination) "
                "VALUES (currval('billing_journalentry_id_seq'), %s, 'available', %s, %s)",
                [funded.pk, delta, denomination],
            )


@pytest.mark.django_db
@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE billing_posting SET delta = delta + 1",
        "DELETE FROM billing_posting",
        "UPDATE billing_journalentry SET event_type = 'x'",
        "DELETE FROM billing_journalentry",
        "UPDATE finn_auditevent SET payload = '{}'",
        "DELETE FROM finn_auditevent",
        "DELETE FROM billing_billingentry",
    ],
)
def test_append_only_rows_cannot_be_changed(make_account, now, statement: str) -> None:
    # given
    funded = make_account(1_000)
    services.entry_reserve(account_id=funded.pk, estimated_cost=10, correlation_id="c", now=now)
    # when / then
    with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
        _raw(statement)


@pytest.mark.django_db
def test_balance_checks_hold_in_the_database(make_account) -> None:
    # given
    funded = make_account(0, credit_limit=100)
    # when / then
    with pytest.raises(IntegrityError, match="billing_account_held_non_negative"), transaction.atomic():
        _raw("UPDATE billing_account SET held = -1 WHERE id = %s", [funded.pk])
    with pytest.raises(IntegrityError, match="billing_account_available_within_credit_limit"), transaction.atomic():
        _raw("UPDATE billing_account SET available = -101 WHERE id = %s", [funded.pk])


STORED = [s for s in EntryState if s != EntryState.IDLE]
PAIRS = [(a, b) for a in STORED for b in EntryState if a != b]


@pytest.mark.django_db
def test_the_trigger_allows_exactly_the_transition_table(make_account, now) -> None:
    # given: one entry in every stored state
    funded = make_account(100_000)
    entries = {state: entry_in_state(state, account_id=funded.pk, now=now) for state in STORED}
    allowed_by_db = set()
    # when: every raw state change is attempted (and rolled back)
    for source, target in PAIRS:
        actual = "600" if target in CHARGED_STATES else "NULL"
        try:
            with transaction.atomic():
                _raw(
                    f"UPDATE billing_billingentry SET state = %s, actual_cost = COALESCE(actual_cost, {actual}) "
                    "WHERE id = %s",
                    [target.value, entries[source]],
                )
                allowed_by_db.add((source, target))
                raise _Rollback
        except _Rollback:
            pass
        except IntegrityError as exc:
            assert exc.__cause__.diag.constraint_name == "billing_billingentry_allowed_transition"  # type: ignore[union-attr]
    # then
    expected = {(a, b) for a, b in PAIRS if b in TRANSITIONS[a]}
    assert allowed_by_db == expected


@pytest.mark.django_db
def test_amounts_of_an_entry_are_immutable(make_account, now) -> None:
    # given
    funded = make_account(10_000)
    entry_id = entry_in_state(EntryState.COMMITTED, account_id=funded.pk, now=now)
    # when / then
    for assignment in ("estimated_cost = estimated_cost + 1", "actual_cost = actual_cost + 1"):
        with pytest.raises(IntegrityError, match="immutable"), transaction.atomic():
            _raw(f"UPDATE billing_billingentry SET {assignment} WHERE id = %s", [entry_id])


@pytest.mark.django_db
def test_audit_sequence_increases_and_crc_is_well_formed(make_account, now) -> None:
    # given
    funded = make_account(10_000)
    # when
    for _ in range(3):
        services.entry_reserve(account_id=funded.pk, estimated_cost=10, correlation_id="c", now=now)
    # then
    sequences = list(AuditEvent.objects.order_by("sequence").values_list("sequence", flat=True))
    assert sequences == sorted(set(sequences))
    with pytest.raises(IntegrityError, match="finn_auditevent_crc32_format"), transaction.atomic():
        _raw(
            "INSERT INTO finn_auditevent (schema_version, event_type, correlation_id, actor, reason, payload, crc32,"
            " created_at) VALUES (1, 'x', 'c', '', '', '{}', 'XYZ', now())"
        )


class _Rollback(Exception):
    pass


@pytest.mark.django_db(transaction=True)
def test_a_balance_change_without_its_postings_is_refused_at_commit(make_account, now) -> None:
    # given
    funded = make_account(5_000)
    # when: any role (here the owner) edits a balance row without postings
    with pytest.raises(IntegrityError, match="billing_account_balance_follows_postings"), transaction.atomic():
        _raw("UPDATE billing_account SET available = available + 1000000 WHERE id = %s", [funded.pk])
    with pytest.raises(IntegrityError, match="billing_account_balance_follows_postings"), transaction.atomic():
        _raw("UPDATE billing_account SET available = available - 100, held = held + 100 WHERE id = %s", [funded.pk])
    # then: unchanged; and a change that comes with its postings commits
    assert Account.objects.get(pk=funded.pk).available == 5_000
    services.entry_reserve(account_id=funded.pk, estimated_cost=100, correlation_id="c", now=now)
    funded.account.refresh_from_db()
    assert (funded.account.available, funded.account.held) == (4_900, 100)
