"""Writes of the nft app: personalities (versioned) and the onboarding flow."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from ulid import ULID

from credits.models import AgentWallet
from credits.services import agent_wallet_create
from finn.audit import audit_append
from finn.db import violates
from finn.errors import Conflict, Forbidden, InvalidRequest, NotFound
from finn.flags import allowlisted, require_feature
from finn.validators import is_eth_address
from nft import detection
from nft.erc6551 import token_bound_account
from nft.models import STEPS, VOICES, OnboardingSession, Personality, PersonalityVersion

MAX_NAME = 100
MAX_DOMAINS = 5
MAX_DOMAIN_CHARS = 100
MAX_INSTRUCTIONS = 2000
_TOKEN_ID = re.compile(r"^[0-9]{1,78}$")


class PersonalityNotFound(NotFound):
    code = "personality_not_found"


class PersonalityExists(Conflict):
    code = "personality_exists"


class SessionNotFound(NotFound):
    code = "session_not_found"


class NotAllowlisted(Forbidden):
    code = "not_allowlisted"


class NotOwner(Forbidden):
    code = "not_owner"


class InvalidStep(InvalidRequest):
    code = "invalid_step"


# --- validation ---------------------------------------------------------------------


def nft_ref(collection: str, token_id: str) -> tuple[str, str]:
    """A normalized (collection, token id), or 400."""
    if not isinstance(collection, str) or not is_eth_address(collection):
        raise InvalidRequest("collection must be a 0x-prefixed 20-byte hex address", reason="invalid_collection")
    if not isinstance(token_id, str) or not _TOKEN_ID.match(token_id) or int(token_id) >= 2**256:
        raise InvalidRequest("token_id must be a non-negative integer (uint256)", reason="invalid_token_id")
    return collection.lower(), str(int(token_id))


@dataclass(frozen=True)
class PersonalityFields:
    name: str
    voice: str
    expertise_domains: list[str]
    custom_instructions: str


def personality_fields(data: dict[str, Any], *, defaults: PersonalityFields | None = None) -> PersonalityFields:
    """Validate a personality body (absent keys keep ``defaults`` when given)."""
    name = data.get("name", defaults.name if defaults else None)
    if not isinstance(name, str) or not name.strip() or len(name.strip()) > MAX_NAME:
        raise InvalidRequest(f"name must be 1-{MAX_NAME} characters", reason="invalid_name")
    voice = data.get("voice", defaults.voice if defaults else None)
    if voice not in VOICES:
        raise InvalidRequest(f"voice must be one of {', '.join(VOICES)}", reason="invalid_voice")
    domains = data.get("expertise_domains", defaults.expertise_domains if defaults else [])
    if not isinstance(domains, list) or len(domains) > MAX_DOMAINS:
        raise InvalidRequest(f"expertise_domains is a list of at most {MAX_DOMAINS}", reason="invalid_domains")
    cleaned = [d.strip() for d in domains if isinstance(d, str)]
    if len(cleaned) != len(domains) or not all(0 < len(d) <= MAX_DOMAIN_CHARS for d in cleaned):
        raise InvalidRequest("each expertise domain is a non-empty string", reason="invalid_domains")
    instructions = data.get("custom_instructions", defaults.custom_instructions if defaults else "")
    if not isinstance(instructions, str) or len(instructions) > MAX_INSTRUCTIONS:
        raise InvalidRequest(f"custom_instructions is at most {MAX_INSTRUCTIONS} characters", reason="too_long")
    return PersonalityFields(name.strip(), str(voice), cleaned, instructions)


# --- personalities -----------------------------------------------------------------


def _version_row(personality: Personality, fields: PersonalityFields, *, author: str, now: datetime) -> None:
    PersonalityVersion.objects.create(
        version_id=f"pv_{ULID()}",
        personality=personality,
        version=personality.version,
        name=fields.name,
        voice=fields.voice,
        expertise_domains=fields.expertise_domains,
        custom_instructions=fields.custom_instructions,
        author=author,
        created_at=now,
    )


def personality_create(
    *, collection: str, token_id: str, fields: PersonalityFields, author: str, now: datetime
) -> Personality:
    collection, token_id = nft_ref(collection, token_id)
    try:
        with transaction.atomic(durable=True):
            personality = Personality.objects.create(
                collection=collection,
                token_id=token_id,
                name=fields.name,
                voice=fields.voice,
                expertise_domains=fields.expertise_domains,
                custom_instructions=fields.custom_instructions,
                version=1,
                created_at=now,
                updated_at=now,
            )
            _version_row(personality, fields, author=author, now=now)
            audit_append(
                event_type="personality_create",
                payload={"collection": collection, "token_id": token_id, "version": 1},
                correlation_id=f"{collection}:{token_id}",
                now=now,
                actor=author,
            )
    except IntegrityError as exc:
        if violates(exc, "nft_personality_nft_uniq"):
            raise PersonalityExists("this NFT already has a personality; update it with PUT") from None
        raise
    return personality


def personality_update(
    *, collection: str, token_id: str, data: dict[str, Any], author: str, now: datetime
) -> Personality:
    """A new version (the previous one is kept); absent fields keep their values."""
    collection, token_id = nft_ref(collection, token_id)
    with transaction.atomic(durable=True):
        personality = Personality.objects.select_for_update().filter(collection=collection, token_id=token_id).first()
        if personality is None:
            raise PersonalityNotFound("no personality for this NFT")
        fields = personality_fields(
            data,
            defaults=PersonalityFields(
                personality.name,
                personality.voice,
                list(personality.expertise_domains),
                personality.custom_instructions,
            ),
        )
        Personality.objects.filter(pk=personality.pk).update(
            name=fields.name,
            voice=fields.voice,
            expertise_domains=fields.expertise_domains,
            custom_instructions=fields.custom_instructions,
            version=F("version") + 1,
            updated_at=now,
        )
        personality.refresh_from_db()
        _version_row(personality, fields, author=author, now=now)
        audit_append(
            event_type="personality_update",
            payload={"collection": collection, "token_id": token_id, "version": personality.version},
            correlation_id=f"{collection}:{token_id}",
            now=now,
            actor=author,
        )
    return personality


# --- onboarding -------------------------------------------------------------------


def _step_check(session: OnboardingSession, expected: str) -> None:
    if session.current_step != expected:
        raise InvalidStep(
            f"expected step '{expected}', currently at '{session.current_step}'",
            expected_step=expected,
            current_step=session.current_step,
        )


def onboarding_get(*, session_id: str, wallet: str, now: datetime) -> OnboardingSession:
    session = OnboardingSession.objects.filter(pk=session_id, wallet=wallet.lower(), expires_at__gt=now).first()
    if session is None or session.completed_at is not None:
        raise SessionNotFound("no such onboarding session (or it expired)")
    return session


def _advance(session: OnboardingSession, expected: str, *, now: datetime, **fields: Any) -> OnboardingSession:
    """Move to the next step with a compare-and-set on the current one: of two concurrent requests one wins."""
    index = STEPS.index(expected)
    following = STEPS[index + 1] if index + 1 < len(STEPS) else "done"
    updated = OnboardingSession.objects.filter(pk=session.pk, current_step=expected, expires_at__gt=now).update(
        current_step=following,
        updated_at=now,
        **fields,
    )
    if not updated:
        session.refresh_from_db()
        _step_check(session, expected)
        raise SessionNotFound("no such onboarding session (or it expired)")
    session.refresh_from_db()
    return session


def onboarding_start(*, wallet: str, account_id: int, now: datetime) -> OnboardingSession:
    require_feature("onboarding", "onboarding is currently disabled")
    wallet = wallet.lower()
    if not allowlisted(wallet):
        raise NotAllowlisted("this wallet is not on the beta allowlist yet", waitlist_url="/waitlist/")
    with transaction.atomic(durable=True):
        session = OnboardingSession.objects.create(
            id=f"onb_{ULID()}",
            wallet=wallet,
            account_id=account_id,
            current_step="nft_detect",
            created_at=now,
            updated_at=now,
            expires_at=now + timedelta(seconds=settings.ONBOARDING_SESSION_SECONDS),
        )
        audit_append(
            event_type="onboarding_start",
            payload={"session_id": session.pk, "wallet": wallet},
            correlation_id=session.pk,
            now=now,
            account_id=account_id,
            actor=wallet,
        )
    return session


def onboarding_detect(
    *, session_id: str, wallet: str, claimed: list[tuple[str, str]], now: datetime
) -> tuple[OnboardingSession, detection.Detection]:
    session = onboarding_get(session_id=session_id, wallet=wallet, now=now)
    _step_check(session, "nft_detect")
    found = detection.detect_nfts(session.wallet, claimed=claimed)  # HTTP: outside any transaction
    nfts = [{"collection": n.collection, "token_id": n.token_id, "title": n.title} for n in found.nfts]
    return _advance(session, "nft_detect", now=now, detected_nfts=nfts), found


def onboarding_select(
    *, session_id: str, wallet: str, collection: str, token_id: str, now: datetime
) -> OnboardingSession:
    collection, token_id = nft_ref(collection, token_id)
    session = onboarding_get(session_id=session_id, wallet=wallet, now=now)
    _step_check(session, "nft_select")
    if not detection.owns(session.wallet, collection, token_id):
        raise NotOwner("this wallet does not own that NFT")
    return _advance(session, "nft_select", now=now, selected_collection=collection, selected_token_id=token_id)


def onboarding_personality(
    *, session_id: str, wallet: str, body: dict[str, Any] | None, now: datetime
) -> OnboardingSession:
    """Create the NFT's personality, or update it when it exists (a plain lookup), or skip."""
    session = onboarding_get(session_id=session_id, wallet=wallet, now=now)
    _step_check(session, "personality_config")
    configured = False
    if body is not None:
        collection, token_id = session.selected_collection, session.selected_token_id
        if Personality.objects.filter(collection=collection, token_id=token_id).exists():
            personality_update(collection=collection, token_id=token_id, data=body, author=session.wallet, now=now)
        else:
            fields = personality_fields(body, defaults=PersonalityFields(f"Agent {token_id}", "analytical", [], ""))
            personality_create(collection=collection, token_id=token_id, fields=fields, author=session.wallet, now=now)
        configured = True
    return _advance(session, "personality_config", now=now, personality_configured=configured)


def onboarding_credits(*, session_id: str, wallet: str, now: datetime) -> OnboardingSession:
    session = onboarding_get(session_id=session_id, wallet=wallet, now=now)
    _step_check(session, "credit_purchase")
    return _advance(session, "credit_purchase", now=now, credits_purchased=True)


def onboarding_complete(*, session_id: str, wallet: str, now: datetime) -> OnboardingSession:
    """The agent goes live: its ERC-6551 account address, and its agent wallet in credits."""
    session = onboarding_get(session_id=session_id, wallet=wallet, now=now)
    _step_check(session, "agent_live")
    address = token_bound_account(
        token_contract=session.selected_collection,
        token_id=int(session.selected_token_id),
        chain_id=settings.NFT_CHAIN_ID,
        implementation=settings.ERC6551_IMPLEMENTATION,
        salt=settings.ERC6551_SALT,
        registry=settings.ERC6551_REGISTRY,
    )
    # The agent wallet first: idempotent on its ERC-6551 address, so a retry after a crash is safe.
    if not AgentWallet.objects.filter(account_address=address).exists():
        try:
            agent_wallet_create(
                owner_address=session.wallet,
                token_id=session.selected_token_id,
                daily_cap=None,
                token_contract=session.selected_collection,
                account_address=address,
                now=now,
            )
        except IntegrityError as exc:
            if not violates(exc, "credits_agentwallet_account_address_uniq"):
                raise
    with transaction.atomic(durable=True):
        session = _advance(session, "agent_live", now=now, agent_address=address, completed_at=now)
        audit_append(
            event_type="onboarding_complete",
            payload={"session_id": session.pk, "agent_address": address},
            correlation_id=session.pk,
            now=now,
            account_id=session.account_id,
            actor=session.wallet,
        )
    return session
