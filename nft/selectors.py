"""Reads of the nft app."""

from __future__ import annotations

import html
import re
from typing import Any

from nft.models import Personality, PersonalityVersion

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|>~])")


def personality_get(*, collection: str, token_id: str) -> Personality | None:
    return Personality.objects.filter(collection=collection, token_id=token_id).first()


def personality_data(personality: Personality) -> dict[str, Any]:
    return {
        "id": f"{personality.collection}:{personality.token_id}",
        "collection": personality.collection,
        "token_id": personality.token_id,
        "name": personality.name,
        "voice": personality.voice,
        "expertise_domains": list(personality.expertise_domains),
        "custom_instructions": personality.custom_instructions,
        "version": personality.version,
        "created_at": personality.created_at.isoformat(),
        "updated_at": personality.updated_at.isoformat(),
    }


def personality_versions(personality: Personality) -> list[dict[str, Any]]:
    rows = PersonalityVersion.objects.filter(personality=personality).order_by("-version")
    return [
        {
            "version_id": row.version_id,
            "version": row.version,
            "name": row.name,
            "voice": row.voice,
            "expertise_domains": list(row.expertise_domains),
            "custom_instructions": row.custom_instructions,
            "author": row.author,
            "created_at": row.created_at.isoformat(),
        }
        for row in rows
    ]


def _escape(text: str) -> str:
    """User text in markdown: HTML-escaped, markdown syntax backslash-escaped, one paragraph per line."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", html.escape(text, quote=True))


def personality_profile_markdown(personality: Personality) -> str:
    domains = "\n".join(f"- {_escape(d)}" for d in personality.expertise_domains) or "- (none yet)"
    instructions = "\n".join(_escape(line) for line in personality.custom_instructions.splitlines()) or "(none)"
    return (
        f"# {_escape(personality.name)}\n\n"
        f"Agent profile of NFT `{personality.collection}` #{personality.token_id} (version {personality.version}).\n\n"
        f"**Voice:** {personality.voice}\n\n"
        f"## Expertise\n\n{domains}\n\n"
        f"## Instructions\n\n{instructions}\n"
    )
