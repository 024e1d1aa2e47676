"""Used nonces live in PostgreSQL; a replay hits the primary key."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from prometheus_client import REGISTRY

from credits.models import UsedNonce
from credits.services import nonce_cleanup, nonce_consume
from credits.tasks import nonce_cleanup_task
from tests.conftest import run_threads


@pytest.mark.django_db
def test_second_consumption_is_a_replay(now) -> None:
    # when
    first = nonce_consume(kind="x402", parts=("0xAbC", "0x01"), now=now)
    again = nonce_consume(kind="x402", parts=("0xabc", "0x01"), now=now)  # same, other case
    other_kind = nonce_consume(kind="siwe", parts=("0xabc", "0x01"), now=now)
    # then
    assert (first, again, other_kind) == (True, False, True)


@pytest.mark.django_db(transaction=True)
def test_concurrent_consumers_one_wins() -> None:
    # when
    results = run_threads(16, lambda _: nonce_consume(kind="siwe", parts=("n-1",), now=timezone.now()))
    # then
    assert results.count(True) == 1
    assert UsedNonce.objects.count() == 1


@pytest.mark.django_db
def test_cleanup_deletes_only_old_nonces_in_batches_and_reports(now) -> None:
    # given
    for index in range(25):
        nonce_consume(kind="x402", parts=(f"old-{index}",), now=now - timedelta(hours=25))
    nonce_consume(kind="x402", parts=("fresh",), now=now)
    deleted_before = REGISTRY.get_sample_value("nonce_cleanup_deleted_total") or 0
    # when
    result = nonce_cleanup(now=now, batch_size=10)
    # then
    assert result.deleted == 25
    assert 0 <= result.seconds < 30
    assert UsedNonce.objects.count() == 1
    assert REGISTRY.get_sample_value("nonce_cleanup_deleted_total") == deleted_before + 25


@pytest.mark.django_db
def test_cleanup_task_reports_its_count(now) -> None:
    # given
    nonce_consume(kind="x402", parts=("old",), now=now - timedelta(days=2))
    # when
    summary = nonce_cleanup_task()
    # then
    assert summary.startswith("deleted 1 used nonces in ")
