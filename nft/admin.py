"""NFT agents in the admin: read-only personalities (with versions) and onboarding sessions."""

from __future__ import annotations

from django.contrib import admin

from finn.admin_base import ReadOnlyAdmin
from nft.models import OnboardingSession, Personality, PersonalityVersion


@admin.register(Personality)
class PersonalityAdmin(ReadOnlyAdmin[Personality]):
    list_display = ["collection", "token_id", "name", "voice", "version", "updated_at"]
    list_filter = ["voice"]
    search_fields = ["=collection", "=token_id", "name"]


@admin.register(PersonalityVersion)
class PersonalityVersionAdmin(ReadOnlyAdmin[PersonalityVersion]):
    list_display = ["version_id", "personality", "version", "author", "created_at"]
    list_select_related = ["personality"]
    raw_id_fields = ["personality"]


@admin.register(OnboardingSession)
class OnboardingSessionAdmin(ReadOnlyAdmin[OnboardingSession]):
    list_display = ["id", "wallet", "current_step", "step_index", "expires_at", "completed_at"]
    list_filter = ["current_step"]
    search_fields = ["=id", "=wallet"]
