from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from billing import api as billing_api
from billing import outbound_api, statement_api
from credits import api as credits_api
from credits import metering_api
from credits.x402 import api as x402_api
from finn import api_docs, dashboard, second_factor, views, web
from nft import api as nft_api
from webhooks import views as webhook_views

handler404 = "finn.errors.json_404"
handler500 = "finn.errors.json_500"

api_v1 = [
    path("", api_docs.ApiIndexApi.as_view(), name="api-index"),
    path("billing/entries", metering_api.EntryReserveApi.as_view(), name="billing-entry-reserve"),
    path("billing/entries/<str:entry_id>", billing_api.EntryDetailApi.as_view(), name="billing-entry-detail"),
    path("billing/entries/<str:entry_id>/commit", metering_api.EntryCommitApi.as_view(), name="billing-entry-commit"),
    path("billing/entries/<str:entry_id>/extend", billing_api.EntryExtendApi.as_view(), name="billing-entry-extend"),
    path("billing/entries/<str:entry_id>/release", billing_api.EntryReleaseApi.as_view(), name="billing-entry-release"),
    path(
        "billing/entries/<str:entry_id>/receipt", metering_api.EntryReceiptApi.as_view(), name="billing-entry-receipt"
    ),
    path("billing/entries/<str:entry_id>/void", metering_api.EntryVoidApi.as_view(), name="billing-entry-void"),
    path(
        "billing/entries/<str:entry_id>/finalize", billing_api.EntryFinalizeApi.as_view(), name="billing-entry-finalize"
    ),
    path("billing/finalize/replay", billing_api.FinalizeReplayApi.as_view(), name="billing-finalize-replay"),
    path("billing/finalize/health", billing_api.FinalizeHealthApi.as_view(), name="billing-finalize-health"),
    path("billing/boosts", billing_api.BoostPurchaseApi.as_view(), name="billing-boost-purchase"),
    path("billing/badges", billing_api.BadgePurchaseApi.as_view(), name="billing-badge-purchase"),
    path("x402/invoke", x402_api.X402InvokeApi.as_view(), name="x402-invoke"),
    path("credits/x402", x402_api.X402CreditPackApi.as_view(), name="credits-x402"),
    path("nft/<str:collection>/<str:token_id>/personality", nft_api.PersonalityApi.as_view(), name="nft-personality"),
    path(
        "nft/<str:collection>/<str:token_id>/personality/versions",
        nft_api.PersonalityVersionsApi.as_view(),
        name="nft-personality-versions",
    ),
    path(
        "nft/<str:collection>/<str:token_id>/personality/profile.md",
        nft_api.PersonalityProfileApi.as_view(),
        name="nft-personality-profile",
    ),
    path("onboarding/start", nft_api.OnboardingStartApi.as_view(), name="onboarding-start"),
    path("onboarding/<str:session_id>", nft_api.OnboardingSessionApi.as_view(), name="onboarding-session"),
    path("onboarding/<str:session_id>/detect-nfts", nft_api.OnboardingDetectApi.as_view(), name="onboarding-detect"),
    path("onboarding/<str:session_id>/select-nft", nft_api.OnboardingSelectApi.as_view(), name="onboarding-select"),
    path(
        "onboarding/<str:session_id>/personality",
        nft_api.OnboardingPersonalityApi.as_view(),
        name="onboarding-personality",
    ),
    path("onboarding/<str:session_id>/credits", nft_api.OnboardingCreditsApi.as_view(), name="onboarding-credits"),
    path("onboarding/<str:session_id>/complete", nft_api.OnboardingCompleteApi.as_view(), name="onboarding-complete"),
    path("models", credits_api.ModelListApi.as_view(), name="models"),
    path("models/<path:model>/accuracy", credits_api.ModelAccuracyApi.as_view(), name="model-accuracy"),
    path("auth/nonce", credits_api.AuthNonceApi.as_view(), name="auth-nonce"),
    path("auth/verify", credits_api.AuthVerifyApi.as_view(), name="auth-verify"),
    path("auth/refresh", credits_api.AuthRefreshApi.as_view(), name="auth-refresh"),
    path("auth/logout", credits_api.AuthLogoutApi.as_view(), name="auth-logout"),
    path("pricing/estimate", credits_api.EstimateApi.as_view(), name="pricing-estimate"),
    path("credits/purchase", credits_api.PurchaseApi.as_view(), name="credits-purchase"),
    path("agents/<int:account_id>/budget", credits_api.AgentBudgetApi.as_view(), name="agent-budget"),
    path("agents/<int:account_id>/policy", credits_api.AgentPolicyApi.as_view(), name="agent-policy"),
    path("webhook-endpoints", outbound_api.WebhookEndpointsApi.as_view(), name="webhook-endpoints"),
    path("webhook-endpoints/<int:endpoint_id>", outbound_api.WebhookEndpointApi.as_view(), name="webhook-endpoint"),
    path(
        "webhook-endpoints/<int:endpoint_id>/rotate-secret",
        outbound_api.WebhookEndpointRotateApi.as_view(),
        name="webhook-endpoint-rotate",
    ),
    path(
        "webhook-endpoints/<int:endpoint_id>/deliveries",
        outbound_api.WebhookDeliveriesApi.as_view(),
        name="webhook-endpoint-deliveries",
    ),
    path("accounts/me/balance", billing_api.MyBalanceApi.as_view(), name="account-balance-me"),
    path("accounts/<int:account_id>/balance", billing_api.AccountBalanceApi.as_view(), name="account-balance"),
    path("accounts/<int:account_id>/statement", statement_api.AccountStatementApi.as_view(), name="account-statement"),
]

urlpatterns = [
    path("admin/second-factor/", second_factor.second_factor_verify, name="admin-second-factor"),
    path("admin/dashboard/", admin.site.admin_view(dashboard.dashboard_view), name="admin-dashboard"),
    path("health", views.health, name="health"),
    path(".well-known/jwks.json", credits_api.JwksApi.as_view(), name="jwks"),
    path("health/security", views.health_security, name="health-security"),
    path("waitlist/", web.waitlist, name="waitlist"),
    path("api/v1/csp-report", web.csp_report, name="csp-report"),
    path("api/v1/webhooks/paddle", webhook_views.paddle, name="webhook-paddle"),
    path("api/v1/webhooks/stripe", webhook_views.stripe, name="webhook-stripe"),
    path("api/v1/webhooks/standard", webhook_views.standard, name="webhook-standard"),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", api_docs.SwaggerUiView.as_view(url_name="schema"), name="docs"),
    path("api/redoc/", api_docs.RedocView.as_view(url_name="schema"), name="redoc"),
    path("admin/", admin.site.urls),
    path("metrics", views.metrics, name="prometheus-django-metrics"),
]
