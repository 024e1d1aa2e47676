"""Identity anchors: unique across wallets (409), rotation keeps the history."""

from __future__ import annotations

import pytest
from django.utils import timezone

from credits.errors import IdentityAnchorTaken
from credits.models import AgentWalletAnchor
from credits.services import agent_wallet_anchor_rotate, agent_wallet_create
from finn.models import AuditEvent


def _wallet(token_id: str, anchor: str | None) -> int:
    return agent_wallet_create(
        owner_address="0x" + "11" * 20, token_id=token_id, daily_cap=None, identity_anchor=anchor, now=timezone.now()
    ).pk


@pytest.mark.django_db
def test_rotation_keeps_history_and_frees_the_old_anchor() -> None:
    first = _wallet("1", "0xaa")
    rotated = agent_wallet_anchor_rotate(wallet_id=first, identity_anchor="0xBB", actor="owner", now=timezone.now())
    assert rotated.identity_anchor == "0xbb"
    history = list(AgentWalletAnchor.objects.filter(wallet_id=first).order_by("bound_at", "pk"))
    assert [(h.identity_anchor, h.unbound_at is None) for h in history] == [("0xaa", False), ("0xbb", True)]
    assert AuditEvent.objects.filter(event_type="agent_wallet_anchor_rotated").count() == 1
    _wallet("2", "0xaa")  # the released anchor may back another wallet now


@pytest.mark.django_db
def test_binding_a_second_wallet_to_a_live_anchor_is_409_and_changes_nothing() -> None:
    first = _wallet("1", "0xaa")
    second = _wallet("2", "0xcc")
    with pytest.raises(IdentityAnchorTaken) as taken:
        agent_wallet_anchor_rotate(wallet_id=second, identity_anchor="0xaa", actor="x", now=timezone.now())
    assert (taken.value.status, taken.value.code) == (409, "identity_anchor_taken")
    assert AgentWalletAnchor.objects.filter(wallet_id=second, unbound_at__isnull=True).get().identity_anchor == "0xcc"
    assert AgentWalletAnchor.objects.filter(wallet_id=first, unbound_at__isnull=True).get().identity_anchor == "0xaa"
