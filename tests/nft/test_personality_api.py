"""Personalities: stored and versioned in Postgres, written only by the NFT's owner (or staff)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.test import Client, override_settings

from finn.models import AuditEvent
from nft.models import Personality, PersonalityVersion
from tests.fakes import fake_json_rpc

from .helpers import COLLECTION, OWNER, STRANGER, signed_in

URL = f"/api/v1/nft/{COLLECTION}/7/personality"
BODY = {
    "name": "  Ada  ",
    "voice": "sage",
    "expertise_domains": ["defi", " lending "],
    "custom_instructions": "Be brief.",
}


@pytest.fixture(autouse=True)
def chain() -> Iterator[None]:
    """A node that says OWNER owns every token of the collection."""
    owner_word = "0x" + "00" * 12 + OWNER.address[2:].lower()
    with fake_json_rpc({"eth_call": owner_word}) as node, override_settings(NFT_RPC_URL=node["url"]):
        yield


def _post(client: Client, body: object, url: str = URL) -> object:
    return client.post(url, body, content_type="application/json")


@pytest.mark.django_db
def test_the_owner_creates_reads_and_versions_a_personality() -> None:
    client, wallet = signed_in(OWNER)
    created = _post(client, BODY)
    assert created.status_code == 201, created.content
    assert created.json()["name"] == "Ada"
    assert created.json()["expertise_domains"] == ["defi", "lending"]
    assert Client().get(URL).json()["version"] == 1  # public read
    updated = client.put(URL, {"voice": "witty"}, content_type="application/json")
    assert updated.status_code == 200
    assert (updated.json()["voice"], updated.json()["name"], updated.json()["version"]) == ("witty", "Ada", 2)
    versions = Client().get(f"{URL}/versions").json()["versions"]
    assert [(v["version"], v["voice"], v["author"]) for v in versions] == [(2, "witty", wallet), (1, "sage", wallet)]
    assert PersonalityVersion.objects.count() == 2
    assert AuditEvent.objects.filter(event_type__in=["personality_create", "personality_update"]).count() == 2


@pytest.mark.django_db
def test_create_twice_is_409_and_missing_is_404() -> None:
    client, _ = signed_in(OWNER)
    assert Client().get(URL).json()["code"] == "personality_not_found"
    assert client.put(URL, {"voice": "sage"}, content_type="application/json").json()["code"] == "personality_not_found"
    _post(client, BODY)
    again = _post(client, BODY)
    assert (again.status_code, again.json()["code"]) == (409, "personality_exists")


@pytest.mark.django_db
def test_only_the_owner_may_write() -> None:
    stranger, _ = signed_in(STRANGER)
    refused = _post(stranger, BODY)
    assert (refused.status_code, refused.json()["code"]) == (403, "not_owner")
    assert _post(Client(), BODY).status_code == 401
    assert not Personality.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("url", "body", "reason"),
    [
        (URL, {**BODY, "name": "   "}, "invalid_name"),
        (URL, {**BODY, "name": "x" * 101}, "invalid_name"),
        (URL, {**BODY, "voice": "shouty"}, "invalid_voice"),
        (URL, {**BODY, "expertise_domains": ["a"] * 6}, "invalid_domains"),
        (URL, {**BODY, "expertise_domains": ["ok", " "]}, "invalid_domains"),
        (URL, {**BODY, "expertise_domains": "defi"}, "invalid_domains"),
        (URL, {**BODY, "custom_instructions": "x" * 2001}, "too_long"),
        ("/api/v1/nft/0x12/7/personality", BODY, "invalid_collection"),
        (f"/api/v1/nft/{COLLECTION}/-1/personality", BODY, "invalid_token_id"),
        (f"/api/v1/nft/{COLLECTION}/abc/personality", BODY, "invalid_token_id"),
        (f"/api/v1/nft/{COLLECTION}/{2**256}/personality", BODY, "invalid_token_id"),
    ],
)
def test_bad_input_is_a_400_with_a_reason(url: str, body: dict[str, object], reason: str) -> None:
    client, _ = signed_in(OWNER)
    response = _post(client, body, url)
    assert response.status_code == 400, response.content
    assert response.json()["reason"] == reason
    assert not Personality.objects.exists()


@pytest.mark.django_db
def test_the_profile_document_escapes_user_text() -> None:
    client, _ = signed_in(OWNER)
    _post(
        client,
        {**BODY, "name": "<script>x</script> *bold*", "custom_instructions": "# not a heading\n[link](http://x)"},
    )
    profile = Client().get(f"{URL}/profile.md")
    assert profile.status_code == 200
    assert profile["Content-Type"].startswith("text/markdown")
    text = profile.content.decode()
    assert "<script>" not in text
    assert "&lt;script&gt;" in text
    assert "\\*bold\\*" in text
    assert "\\# not a heading" in text
    assert "\\[link\\]\\(http://x\\)" in text
    assert "**Voice:** sage" in text
