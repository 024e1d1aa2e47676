"""Audit chain, verify, export, replay and rebuild on real PostgreSQL and Redis."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from billing import services
from billing.models import Account, BillingEntry
from billing.states import EntryState
from billing.wal import CURSOR_KEY, PENDING_COUNT_KEY, audit_replay, rebuild_balances
from finn.audit_chain import audit_chain, audit_export, audit_verify
from finn.models import AuditEvent
from finn.redis import get_redis


def _sql(statement: str, params: list[object] | None = None) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement, params or [])


def _history(make_account, now) -> tuple[object, object]:  # type: ignore[no-untyped-def]
    """A little of everything: mint, reserve, commit, release, void, finalize."""
    alice, bob = make_account(50_000), make_account(20_000)
    e1 = services.entry_reserve(account_id=alice.pk, estimated_cost=3_000, correlation_id="a1", now=now).entry.id
    services.entry_extend(entry_id=e1, additional_cost=1_000, now=now)  # the stream ran long
    services.entry_commit(entry_id=e1, actual_cost=3_500, now=now)
    e2 = services.entry_reserve(account_id=alice.pk, estimated_cost=1_000, correlation_id="a2", now=now).entry.id
    services.entry_release(entry_id=e2, reason="user_cancel", now=now)
    e3 = services.entry_reserve(account_id=bob.pk, estimated_cost=4_000, correlation_id="b1", now=now).entry.id
    services.entry_commit(entry_id=e3, actual_cost=4_000, now=now)
    services.entry_void(entry_id=e3, reason="refund", actor="finance", now=now)
    e4 = services.entry_reserve(account_id=bob.pk, estimated_cost=500, correlation_id="b2", now=now).entry.id
    services.entry_commit(entry_id=e4, actual_cost=400, now=now)
    services.entry_finalize_request(entry_id=e4, now=now)
    e5 = services.entry_reserve(account_id=bob.pk, estimated_cost=700, correlation_id="b3", now=now).entry.id
    services.entry_extend(entry_id=e5, additional_cost=300, now=now)  # stays held, grown
    return alice, bob


def _sequences() -> list[int]:
    return list(AuditEvent.objects.order_by("sequence").values_list("sequence", flat=True))


@pytest.mark.django_db
def test_chained_log_verifies(make_account, now) -> None:
    # given
    _history(make_account, now)
    # when
    linked = audit_chain(lag_seconds=0)
    report = audit_verify()
    # then
    assert linked == AuditEvent.objects.count()
    assert report.ok, report.problem
    assert (report.records, report.chained, report.unchained_tail) == (linked, linked, 0)


@pytest.mark.django_db
def test_chainer_leaves_recent_records_for_later_and_verify_reports_the_tail(make_account, now) -> None:
    # given
    _history(make_account, now)
    # when: records are younger than the lag
    linked = audit_chain(lag_seconds=3600)
    report = audit_verify()
    # then
    assert linked == 0
    assert report.ok
    assert report.unchained_tail == AuditEvent.objects.count()


@pytest.mark.django_db
def test_flipped_byte_is_found_at_its_sequence(make_account, now) -> None:
    # given
    _history(make_account, now)
    audit_chain(lag_seconds=0)
    target = _sequences()[5]
    _sql("ALTER TABLE finn_auditevent DISABLE TRIGGER USER")
    _sql(
        "UPDATE finn_auditevent SET payload = jsonb_set(payload, '{estimated_cost}', '\"3001\"') WHERE sequence = %s",
        [target],
    )
    _sql("ALTER TABLE finn_auditevent ENABLE TRIGGER USER")
    # when
    report = audit_verify()
    # then
    assert (report.ok, report.first_bad_sequence) == (False, target)
    assert "checksum" in report.problem


@pytest.mark.django_db
def test_deleted_record_is_found_at_its_sequence(make_account, now) -> None:
    # given
    _history(make_account, now)
    audit_chain(lag_seconds=0)
    target = _sequences()[4]
    _sql("ALTER TABLE finn_auditevent DISABLE TRIGGER USER")
    _sql("DELETE FROM finn_auditevent WHERE sequence = %s", [target])
    _sql("ALTER TABLE finn_auditevent ENABLE TRIGGER USER")
    # when
    report = audit_verify()
    # then
    assert (report.ok, report.first_bad_sequence) == (False, target)
    assert "missing" in report.problem


@pytest.mark.django_db
def test_swapped_records_are_found_at_the_first_of_them(make_account, now) -> None:
    # given
    _history(make_account, now)
    audit_chain(lag_seconds=0)
    sequences = _sequences()
    a, b = sequences[3], sequences[7]
    _sql("ALTER TABLE finn_auditevent DISABLE TRIGGER USER")
    _sql("UPDATE finn_auditevent SET sequence = -1 WHERE sequence = %s", [a])
    _sql("UPDATE finn_auditevent SET sequence = %s WHERE sequence = %s", [a, b])
    _sql("UPDATE finn_auditevent SET sequence = %s WHERE sequence = -1", [b])
    _sql("ALTER TABLE finn_auditevent ENABLE TRIGGER USER")
    # when
    report = audit_verify()
    # then
    assert (report.ok, report.first_bad_sequence) == (False, a)


@pytest.mark.django_db
def test_audit_verify_command_exit_codes(make_account, now) -> None:
    # given
    _history(make_account, now)
    audit_chain(lag_seconds=0)
    out = io.StringIO()
    # when / then
    call_command("audit_verify", stdout=out)
    assert "audit log OK" in out.getvalue()
    _sql("ALTER TABLE finn_auditevent DISABLE TRIGGER USER")
    _sql("UPDATE finn_auditevent SET crc32 = '00000000' WHERE sequence = %s", [_sequences()[2]])
    _sql("ALTER TABLE finn_auditevent ENABLE TRIGGER USER")
    with pytest.raises(CommandError) as info:
        call_command("audit_verify", stdout=io.StringIO())
    assert info.value.returncode == 1


def _redis_state() -> dict[str, dict[str, str] | str | None]:
    client = get_redis()
    state: dict[str, dict[str, str] | str | None] = {}
    for key in sorted(client.keys("billing:*")):
        kind = client.type(key)
        state[key] = client.hgetall(key) if kind == "hash" else client.get(key)
    return state


@pytest.mark.django_db
def test_export_then_replay_rebuilds_redis_and_is_idempotent(make_account, now, tmp_path: Path) -> None:
    # given
    alice, bob = _history(make_account, now)
    export = audit_export(directory=tmp_path)
    get_redis().flushdb()
    # when
    first = audit_replay(directory=tmp_path)
    state_after_first = _redis_state()
    second = audit_replay(directory=tmp_path)
    # then
    assert export.records == AuditEvent.objects.count()
    assert export.segments == ["billing-wal-" + f"{_sequences()[0]:020d}" + ".jsonl"]
    assert (first.processed, first.corrupted) == (export.records, 0)
    assert (second.processed, second.skipped) == (0, export.records)
    assert _redis_state() == state_after_first
    client = get_redis()
    for funded in (alice, bob):
        account = Account.objects.get(pk=funded.pk)  # type: ignore[attr-defined]
        cached = client.hgetall(f"billing:balance:{account.pk}")
        assert (int(cached["available"]), int(cached["held"])) == (account.available, account.held)
    assert int(client.get(PENDING_COUNT_KEY)) == BillingEntry.objects.filter(state=EntryState.FINALIZE_PENDING).count()
    for entry in BillingEntry.objects.all():
        assert client.hget(f"billing:entry:{entry.id}", "state") == entry.state
    assert int(client.get(CURSOR_KEY)) == _sequences()[-1]


@pytest.mark.django_db
def test_replay_skips_unknown_and_future_records_counts_bad_checksums_and_truncates_a_torn_tail(
    make_account, now, tmp_path: Path
) -> None:
    # given
    _history(make_account, now)
    audit_export(directory=tmp_path, segment_max_bytes=2_000)
    segments = sorted(tmp_path.iterdir())
    assert len(segments) >= 2
    first_lines = segments[0].read_text().splitlines()
    bad = json.loads(first_lines[0])
    bad["payload"]["estimated_cost"] = "1"  # checksum no longer matches
    future = json.loads(first_lines[1])
    future["schema_version"] = 2
    unknown = json.loads(first_lines[2])
    unknown["event_type"] = "from_the_future"
    unknown["checksum"] = unknown["checksum"]
    segments[0].write_text(
        "\n".join([json.dumps(bad), json.dumps(future), json.dumps(unknown), *first_lines[3:]]) + "\n"
    )
    last = segments[-1]
    intact = last.read_bytes()
    last.write_bytes(intact + b'{"schema_version":1,"event_type":"billing_res')  # torn write
    # when
    report = audit_replay(directory=tmp_path)
    # then
    assert report.corrupted == 1
    assert report.skipped == 2
    assert report.truncated_bytes > 0
    assert last.read_bytes() == intact


@pytest.mark.django_db
def test_rebuild_balances_finds_nothing_on_a_sound_ledger_and_repairs_with_audit(make_account, now) -> None:
    # given
    alice, _ = _history(make_account, now)
    clean = rebuild_balances(now=now)
    _sql("UPDATE billing_account SET available = available + 7 WHERE id = %s", [alice.pk])  # type: ignore[attr-defined]
    # when
    found = rebuild_balances(now=now)
    repaired = rebuild_balances(repair=True, now=now)
    # then
    assert clean.differences == []
    assert [d[0] for d in found.differences] == [alice.pk]  # type: ignore[attr-defined]
    assert repaired.repaired == 1
    assert rebuild_balances(now=now).differences == []
    assert AuditEvent.objects.filter(event_type="billing_balance_repair", account_id=alice.pk).count() == 1  # type: ignore[attr-defined]


@pytest.mark.django_db
def test_rebuild_balances_command_exits_1_on_differences(make_account, now) -> None:
    # given
    funded = make_account(1_000)
    _sql("UPDATE billing_account SET held = held + 1 WHERE id = %s", [funded.pk])
    # when / then
    with pytest.raises(CommandError):
        call_command("rebuild_balances", stdout=io.StringIO())
    call_command("rebuild_balances", "--repair", stdout=io.StringIO())
    call_command("rebuild_balances", stdout=io.StringIO())
