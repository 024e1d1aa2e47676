"""Idempotency keys older than the retention window are trimmed in bounded batches."""

from __future__ import annotations

from datetime import timedelta

import pytest

from finn.idempotency import idempotency_claim, idempotency_key_cleanup
from finn.models import IdempotencyKey


@pytest.mark.django_db
def test_cleanup_deletes_only_expired_keys_across_batches(now) -> None:
    # given: five keys from two days ago and one fresh
    for index in range(5):
        idempotency_claim(account_id=1, scope="s", key=f"old-{index}", request_hash="h", now=now - timedelta(days=2))
    idempotency_claim(account_id=1, scope="s", key="fresh", request_hash="h", now=now)
    # when
    deleted = idempotency_key_cleanup(now=now, batch_size=2)
    # then
    assert deleted == 5
    assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["fresh"]
