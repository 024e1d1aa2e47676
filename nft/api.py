"""NFT agent HTTP API: personalities and the onboarding flow (thin views)."""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from finn import clock
from finn.auth import Principal
from finn.errors import Forbidden, InvalidRequest
from finn.fields import ErrorSerializer
from finn.flags import require_feature
from finn.validators import ETH_ADDRESS
from nft import detection, selectors, services
from nft.models import VOICES, OnboardingSession

_NFT_REF = [
    OpenApiParameter("collection", str, OpenApiParameter.PATH, pattern=f"^{ETH_ADDRESS.pattern}$"),
    # A uint256: at most 77 digits are always below 2**256 (78 may not be).
    OpenApiParameter("token_id", str, OpenApiParameter.PATH, pattern=r"^[0-9]{1,77}$"),
]
_ERRORS = {
    400: OpenApiResponse(ErrorSerializer, description="invalid input (invalid_collection, invalid_voice, ...)"),
    401: OpenApiResponse(ErrorSerializer, description="not signed in"),
    403: OpenApiResponse(ErrorSerializer, description="not_owner / not_allowlisted"),
    404: OpenApiResponse(ErrorSerializer, description="feature_disabled (the feature is turned off)"),
}


class PersonalityOutput(serializers.Serializer):
    id = serializers.CharField()
    collection = serializers.CharField()
    token_id = serializers.CharField()
    name = serializers.CharField()
    voice = serializers.CharField()
    expertise_domains = serializers.ListField(child=serializers.CharField())
    custom_instructions = serializers.CharField()
    version = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class PersonalityVersionOutput(serializers.Serializer):
    version_id = serializers.CharField()
    version = serializers.IntegerField()
    name = serializers.CharField()
    voice = serializers.CharField()
    expertise_domains = serializers.ListField(child=serializers.CharField())
    custom_instructions = serializers.CharField()
    author = serializers.CharField()
    created_at = serializers.DateTimeField()


class PersonalityVersionsOutput(serializers.Serializer):
    versions = PersonalityVersionOutput(many=True)


class PersonalityInput(serializers.Serializer):
    """The schema of a personality body; ``services.personality_fields`` validates it (same limits)."""

    name = serializers.RegexField(r"\S", required=False, max_length=services.MAX_NAME)
    voice = serializers.ChoiceField(choices=VOICES, required=False)
    expertise_domains = serializers.ListField(
        child=serializers.RegexField(r"\S", max_length=services.MAX_DOMAIN_CHARS),
        required=False,
        max_length=services.MAX_DOMAINS,
    )
    custom_instructions = serializers.CharField(required=False, allow_blank=True, max_length=services.MAX_INSTRUCTIONS)


class PersonalityCreateInput(PersonalityInput):
    name = serializers.RegexField(r"\S", max_length=services.MAX_NAME)
    voice = serializers.ChoiceField(choices=VOICES)


class OnboardingPersonalityInput(PersonalityInput):
    skip = serializers.BooleanField(required=False, help_text="true: no personality (the other fields are ignored)")


def _nft_enabled() -> None:
    require_feature("nft", "NFT agents are currently disabled")


def _body(request: Request) -> dict[str, Any]:
    if not isinstance(request.data, dict):
        raise InvalidRequest("the body must be a JSON object", reason="not_object")
    return dict(request.data)


def _writer(request: Request, collection: str, token_id: str) -> str:
    """The author of a write: the NFT's owner signed in with SIWE, or staff."""
    principal = request.user
    if not isinstance(principal, Principal):
        raise Forbidden("sign in first")
    if principal.is_staff:
        return principal.actor or f"staff:{principal.account_id}"
    wallet = (principal.actor or "").lower()
    if not wallet.startswith("0x") or not detection.owns(wallet, collection, token_id):
        raise services.NotOwner("only the NFT's owner may change its personality")
    return wallet


class PersonalityApi(APIView):
    def get_permissions(self) -> Any:
        return [AllowAny()] if self.request.method == "GET" else super().get_permissions()

    @extend_schema(
        operation_id="nft_personality_get",
        parameters=_NFT_REF,
        summary="An NFT's personality",
        responses={200: PersonalityOutput, 404: OpenApiResponse(ErrorSerializer), **_ERRORS},
    )
    def get(self, request: Request, collection: str, token_id: str) -> Response:
        _nft_enabled()
        collection, token_id = services.nft_ref(collection, token_id)
        personality = selectors.personality_get(collection=collection, token_id=token_id)
        if personality is None:
            raise services.PersonalityNotFound("no personality for this NFT")
        return Response(selectors.personality_data(personality))

    @extend_schema(
        operation_id="nft_personality_create",
        parameters=_NFT_REF,
        summary="Create an NFT's personality (owner or staff)",
        request=PersonalityCreateInput,
        responses={201: PersonalityOutput, 409: OpenApiResponse(ErrorSerializer), **_ERRORS},
    )
    def post(self, request: Request, collection: str, token_id: str) -> Response:
        _nft_enabled()
        collection, token_id = services.nft_ref(collection, token_id)
        fields = services.personality_fields(_body(request))
        author = _writer(request, collection, token_id)
        personality = services.personality_create(
            collection=collection, token_id=token_id, fields=fields, author=author, now=clock.now()
        )
        return Response(selectors.personality_data(personality), status=201)

    @extend_schema(
        operation_id="nft_personality_update",
        parameters=_NFT_REF,
        summary="Update an NFT's personality (a new version)",
        request=PersonalityInput,
        responses={200: PersonalityOutput, 404: OpenApiResponse(ErrorSerializer), **_ERRORS},
    )
    def put(self, request: Request, collection: str, token_id: str) -> Response:
        _nft_enabled()
        collection, token_id = services.nft_ref(collection, token_id)
        body = _body(request)
        author = _writer(request, collection, token_id)
        personality = services.personality_update(
            collection=collection, token_id=token_id, data=body, author=author, now=clock.now()
        )
        return Response(selectors.personality_data(personality))


class PersonalityVersionsApi(APIView):
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="nft_personality_versions",
        parameters=_NFT_REF,
        summary="Every version of an NFT's personality, newest first",
        responses={200: PersonalityVersionsOutput, 404: OpenApiResponse(ErrorSerializer)},
    )
    def get(self, request: Request, collection: str, token_id: str) -> Response:
        _nft_enabled()
        collection, token_id = services.nft_ref(collection, token_id)
        personality = selectors.personality_get(collection=collection, token_id=token_id)
        if personality is None:
            raise services.PersonalityNotFound("no personality for this NFT")
        return Response({"versions": selectors.personality_versions(personality)})


class PersonalityProfileApi(APIView):
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="nft_personality_profile",
        parameters=_NFT_REF,
        summary="The agent profile document (markdown)",
        responses={(200, "text/markdown"): str, 404: OpenApiResponse(ErrorSerializer)},
    )
    def get(self, request: Request, collection: str, token_id: str) -> HttpResponse:
        _nft_enabled()
        collection, token_id = services.nft_ref(collection, token_id)
        personality = selectors.personality_get(collection=collection, token_id=token_id)
        if personality is None:
            raise services.PersonalityNotFound("no personality for this NFT")
        return HttpResponse(
            selectors.personality_profile_markdown(personality), content_type="text/markdown; charset=utf-8"
        )


class OnboardingSessionOutput(serializers.Serializer):
    session_id = serializers.CharField()
    wallet = serializers.CharField()
    current_step = serializers.CharField()
    step_index = serializers.IntegerField()
    completed_steps = serializers.ListField(child=serializers.CharField())
    detected_nfts = serializers.ListField(child=serializers.DictField())
    selected_nft = serializers.DictField(allow_null=True)
    personality_configured = serializers.BooleanField()
    credits_purchased = serializers.BooleanField()
    expires_at = serializers.DateTimeField()


def _session_data(session: OnboardingSession) -> dict[str, Any]:
    selected = (
        {"collection": session.selected_collection, "token_id": session.selected_token_id}
        if session.selected_collection
        else None
    )
    return {
        "session_id": session.pk,
        "wallet": session.wallet,
        "current_step": session.current_step,
        "step_index": session.step_index,
        "completed_steps": list(session.completed_steps),
        "detected_nfts": list(session.detected_nfts),
        "selected_nft": selected,
        "personality_configured": session.personality_configured,
        "credits_purchased": session.credits_purchased,
        "expires_at": session.expires_at.isoformat(),
    }


def _wallet(request: Request) -> tuple[str, int]:
    principal = request.user
    assert isinstance(principal, Principal)
    wallet = (principal.actor or "").lower()
    if not wallet.startswith("0x") or len(wallet) != 42:
        raise Forbidden("onboarding needs a wallet signed in with SIWE", reason="wallet_required")
    return wallet, principal.account_id


class OnboardingStartApi(APIView):
    @extend_schema(
        operation_id="onboarding_start",
        summary="Start onboarding (signed-in, allowlisted wallet)",
        request=None,
        responses={201: OnboardingSessionOutput, **_ERRORS},
    )
    def post(self, request: Request) -> Response:
        wallet, account_id = _wallet(request)
        session = services.onboarding_start(wallet=wallet, account_id=account_id, now=clock.now())
        return Response(_session_data(session), status=201)


class OnboardingSessionApi(APIView):
    @extend_schema(
        operation_id="onboarding_get",
        summary="An onboarding session",
        responses={200: OnboardingSessionOutput, **_ERRORS},
    )
    def get(self, request: Request, session_id: str) -> Response:
        wallet, _ = _wallet(request)
        return Response(_session_data(services.onboarding_get(session_id=session_id, wallet=wallet, now=clock.now())))


class DetectInput(serializers.Serializer):
    token_ids = serializers.ListField(child=serializers.DictField(), required=False, max_length=20)


class OnboardingDetectApi(APIView):
    @extend_schema(
        operation_id="onboarding_detect_nfts",
        summary="Detect the wallet's NFTs",
        request=DetectInput,
        responses={200: OnboardingSessionOutput, **_ERRORS},
    )
    def post(self, request: Request, session_id: str) -> Response:
        wallet, _ = _wallet(request)
        claims = _body(request).get("token_ids", []) if request.data else []
        if not isinstance(claims, list) or len(claims) > detection.MAX_CLAIMED:
            raise InvalidRequest(f"token_ids is a list of at most {detection.MAX_CLAIMED}", reason="invalid_claims")
        claimed = [
            services.nft_ref(str(c.get("collection", "")), str(c.get("token_id", "")))
            for c in claims
            if isinstance(c, dict)
        ]
        session, found = services.onboarding_detect(
            session_id=session_id, wallet=wallet, claimed=claimed, now=clock.now()
        )
        return Response({**_session_data(session), "source": found.source, "cached": found.cached})


class SelectInput(serializers.Serializer):
    collection = serializers.CharField()
    token_id = serializers.CharField()


class OnboardingSelectApi(APIView):
    @extend_schema(
        operation_id="onboarding_select_nft",
        summary="Choose the NFT (ownership re-verified)",
        request=SelectInput,
        responses={200: OnboardingSessionOutput, **_ERRORS},
    )
    def post(self, request: Request, session_id: str) -> Response:
        wallet, _ = _wallet(request)
        body = _body(request)
        session = services.onboarding_select(
            session_id=session_id,
            wallet=wallet,
            collection=str(body.get("collection", "")),
            token_id=str(body.get("token_id", "")),
            now=clock.now(),
        )
        return Response(_session_data(session))


class OnboardingPersonalityApi(APIView):
    @extend_schema(
        operation_id="onboarding_personality",
        summary="Configure (or skip) the agent's personality",
        request=OnboardingPersonalityInput,
        responses={200: OnboardingSessionOutput, **_ERRORS},
    )
    def post(self, request: Request, session_id: str) -> Response:
        wallet, _ = _wallet(request)
        body = _body(request) if request.data else {}
        session = services.onboarding_personality(
            session_id=session_id, wallet=wallet, body=None if body.get("skip") is True else body, now=clock.now()
        )
        return Response(_session_data(session))


class OnboardingCreditsApi(APIView):
    @extend_schema(
        operation_id="onboarding_credits",
        summary="Acknowledge the credit purchase",
        request=None,
        responses={200: OnboardingSessionOutput, **_ERRORS},
    )
    def post(self, request: Request, session_id: str) -> Response:
        wallet, _ = _wallet(request)
        return Response(
            _session_data(services.onboarding_credits(session_id=session_id, wallet=wallet, now=clock.now()))
        )


class CompleteOutput(OnboardingSessionOutput):
    redirect_url = serializers.CharField()
    agent_address = serializers.CharField()


class OnboardingCompleteApi(APIView):
    @extend_schema(
        operation_id="onboarding_complete",
        summary="The agent goes live",
        request=None,
        responses={200: CompleteOutput, **_ERRORS},
    )
    def post(self, request: Request, session_id: str) -> Response:
        wallet, _ = _wallet(request)
        session = services.onboarding_complete(session_id=session_id, wallet=wallet, now=clock.now())
        return Response(
            {
                **_session_data(session),
                "redirect_url": f"/agent/{session.selected_collection}/{session.selected_token_id}",
                "agent_address": session.agent_address,
            }
        )
