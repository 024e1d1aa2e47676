"""Django settings for finn.

Everything that differs between machines comes from the environment through
the typed helpers in ``finn.env``; the README's configuration table lists each
variable. With DEBUG off, a missing secret stops startup with one line.
"""

from __future__ import annotations

import re
import sys
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import dj_database_url
import django_stubs_ext
from csp.constants import NONCE, NONE, SELF

from credits.pricing_config import PricingConfigError, default_pricing, parse_model_pricing
from finn.beat_schedule import beat_schedule
from finn.env import ConfigurationError, env_bool, env_int, env_json, env_list, env_secret, env_str

# Lets typed generics such as ModelAdmin[Model] work at runtime.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent


def _refuse_to_start(message: str) -> None:
    # One line on stderr and a non-zero exit, rather than a traceback: an
    # operator should see at once which variable is wrong.
    raise SystemExit(f"finn: refusing to start: {message}")


try:
    DEBUG = env_bool("DEBUG", False)
    _secret_key = env_secret("SECRET_KEY")
    if _secret_key is None:
        if not DEBUG:
            _refuse_to_start("SECRET_KEY is not set and DEBUG is off")
        _secret_key = "finn-insecure-debug-only-key"  # noqa: S105 - DEBUG only
    SECRET_KEY: str = _secret_key
    ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
    DATABASE_URL = env_secret("DATABASE_URL") or "postgres://postgres@127.0.0.1:5432/finn"
    # The role the running app connects as (granted by webhooks/migrations/0004_app_role_grants.py).
    DATABASE_APP_ROLE = env_str("DATABASE_APP_ROLE", "finn_app") or "finn_app"
    REDIS_URL = env_secret("REDIS_URL") or "redis://127.0.0.1:6379/0"
    CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", REDIS_URL)
    REDIS_HEALTH_COOLDOWN_SECONDS = env_int("REDIS_HEALTH_COOLDOWN_SECONDS", 30, minimum=1)  # OPEN after 3 failures
    CLOCK_ANCHOR_SECONDS = env_int("CLOCK_ANCHOR_SECONDS", 60, minimum=1)
    # Upstream ledger that committed entries are finalized with. Empty: entries
    # stay COMMITTED (see billing.services.entry_commit).
    FINALIZE_URL = env_str("FINALIZE_URL", "") or ""
    FINALIZE_TIMEOUT_SECONDS = env_int("FINALIZE_TIMEOUT_SECONDS", 5, minimum=1)
    FINALIZE_LOCK_TTL_SECONDS = env_int("FINALIZE_LOCK_TTL_SECONDS", 30, minimum=1)
    FINALIZE_MAX_ATTEMPTS = env_int("FINALIZE_MAX_ATTEMPTS", 5, minimum=1)
    FINALIZE_ESCALATION_HOURS = env_int("FINALIZE_ESCALATION_HOURS", 24, minimum=1)
    FINALIZE_MAX_EXPOSURE_CU = env_int("FINALIZE_MAX_EXPOSURE_CU", 500, minimum=0)
    FINALIZE_PENDING_UNHEALTHY = env_int("FINALIZE_PENDING_UNHEALTHY", 50, minimum=1)
    FINALIZE_REPLAY_CONCURRENCY = env_int("FINALIZE_REPLAY_CONCURRENCY", 5, minimum=1)
    FINALIZE_BREAKER_THRESHOLD = env_int("FINALIZE_BREAKER_THRESHOLD", 5, minimum=1)
    FINALIZE_BREAKER_WINDOW_SECONDS = env_int("FINALIZE_BREAKER_WINDOW_SECONDS", 60, minimum=1)
    FINALIZE_BREAKER_COOLDOWN_SECONDS = env_int("FINALIZE_BREAKER_COOLDOWN_SECONDS", 30, minimum=0)
    RECONCILIATION_INTERVAL_SECONDS = env_int("RECONCILIATION_INTERVAL_SECONDS", 60, minimum=1)
    RECONCILIATION_DRIFT_ALERT_MICRO_USD = env_int("RECONCILIATION_DRIFT_ALERT_MICRO_USD", 1000, minimum=0)
    SIWE_DOMAIN = env_str("SIWE_DOMAIN", "localhost:8000") or "localhost:8000"
    SIWE_URI_PREFIX = env_str("SIWE_URI_PREFIX", "http://localhost:8000") or ""
    SIWE_CHAIN_IDS = [int(c) for c in env_list("SIWE_CHAIN_IDS", ["8453", "84532"])]
    ETH_RPC_URL = env_str("ETH_RPC_URL", "") or ""
    RPC_PRIMARY_URL = env_str("RPC_PRIMARY_URL", ETH_RPC_URL) or ""
    RPC_FALLBACK_URL = env_str("RPC_FALLBACK_URL", "") or ""
    PAYMENT_CHAIN_ID = env_int("PAYMENT_CHAIN_ID", 8453, minimum=1)
    USDC_ADDRESS = (env_str("USDC_ADDRESS", "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913") or "").lower()
    TREASURY_ADDRESS = (env_str("TREASURY_ADDRESS", "") or "").lower()
    PAYMENT_MIN_CONFIRMATIONS = env_int("PAYMENT_MIN_CONFIRMATIONS", 12, minimum=1)
    # SIWE access tokens: ES256 with a dedicated key (never SECRET_KEY); previous public keys keep
    # verifying until their tokens expire (rotation). PEM, from the variable or NAME_FILE.
    JWT_SIGNING_KEY = env_secret("JWT_SIGNING_KEY")
    JWT_VERIFICATION_KEYS = env_secret("JWT_VERIFICATION_KEYS") or ""
    if not JWT_SIGNING_KEY and not DEBUG:
        _refuse_to_start("JWT_SIGNING_KEY (or JWT_SIGNING_KEY_FILE) is not set and DEBUG is off")
    JWT_TTL_SECONDS = env_int("JWT_TTL_SECONDS", 900, minimum=60)
    REFRESH_TOKEN_TTL_DAYS = env_int("REFRESH_TOKEN_TTL_DAYS", 30, minimum=1)
    PADDLE_WEBHOOK_SECRET = env_secret("PADDLE_WEBHOOK_SECRET") or ""
    STRIPE_WEBHOOK_SECRET = env_secret("STRIPE_WEBHOOK_SECRET") or ""
    STANDARD_WEBHOOK_SECRET = env_secret("STANDARD_WEBHOOK_SECRET") or ""
    WEBHOOK_LOCK_SECONDS = env_int("WEBHOOK_LOCK_SECONDS", 30, minimum=1)
    WEBHOOK_TOLERANCE_SECONDS = env_int("WEBHOOK_TOLERANCE_SECONDS", 300, minimum=1)
    NONCE_MAX_AGE_HOURS = env_int("NONCE_MAX_AGE_HOURS", 24, minimum=1)
    API_KEY_CACHE_SECONDS = env_int("API_KEY_CACHE_SECONDS", 300, minimum=1)
    # In-process copy of a lookup; revocations reach every process at once through Redis pub/sub,
    # this bounds how long a revoked key can keep working on a process that cannot hear them.
    # Balance-cache writes from a background thread (off the response path); false: on commit, inline.
    BALANCE_CACHE_ASYNC = env_bool("BALANCE_CACHE_ASYNC", True)
    # In-process copy of a key lookup. Revocations reach every process at once (Redis pub/sub);
    # this bounds how long a revoked key works on a process that cannot hear them.
    API_KEY_LOCAL_CACHE_SECONDS = env_int("API_KEY_LOCAL_CACHE_SECONDS", 60, minimum=0)
    HOLD_EXPIRY_BATCH_SIZE = env_int("HOLD_EXPIRY_BATCH_SIZE", 1000, minimum=1)
    BILLING_RESERVE_TTL_SECONDS = env_int("BILLING_RESERVE_TTL_SECONDS", 300, minimum=1)
    BILLING_RESERVE_TTL_MAX_SECONDS = env_int("BILLING_RESERVE_TTL_MAX_SECONDS", 3600, minimum=1)
    IDEMPOTENCY_KEY_RETENTION_HOURS = env_int("IDEMPOTENCY_KEY_RETENTION_HOURS", 24, minimum=1)
    IDEMPOTENCY_LEASE_SECONDS = env_int("IDEMPOTENCY_LEASE_SECONDS", 60, minimum=1)
    DB_PREPARED_STATEMENTS = env_bool("DB_PREPARED_STATEMENTS", True)
    # A transaction-mode pooler (PgBouncer, PgCat, Supavisor, RDS Proxy) gives each transaction
    # whichever server connection is free: no prepared statements, no session state. finn takes
    # one to be there when DB_POOLER=transaction, or when DATABASE_URL's port is 6432
    # (PgBouncer's default) and DB_POOLER is not "none".
    DB_POOLER = (env_str("DB_POOLER", "") or "").strip().lower()
    if DB_POOLER not in ("", "none", "session", "transaction"):
        raise ConfigurationError("DB_POOLER must be none, session or transaction")
    LOG_LEVEL = (env_str("LOG_LEVEL", "INFO") or "INFO").upper()
    OTEL_ENABLED = env_bool("OTEL_ENABLED", False)
    # --- NFT agents (nft/) ---
    BETA_BYPASS_ADDRESSES = [a.lower() for a in env_list("BETA_BYPASS_ADDRESSES", [])]
    ALCHEMY_API_KEY = env_secret("ALCHEMY_API_KEY") or ""
    ALCHEMY_BASE_URL = (
        env_str("ALCHEMY_BASE_URL", f"https://base-mainnet.g.alchemy.com/nft/v3/{ALCHEMY_API_KEY}") or ""
    ).rstrip("/")
    NFT_COLLECTIONS = [str(c).lower() for c in (env_json("NFT_COLLECTIONS", []) or []) if isinstance(c, str)]
    NFT_CHAIN_ID = env_int("NFT_CHAIN_ID", 8453, minimum=1)
    NFT_RPC_URL = env_str("NFT_RPC_URL", ETH_RPC_URL) or ""
    NFT_DETECTION_TIMEOUT_SECONDS = env_int("NFT_DETECTION_TIMEOUT_SECONDS", 10, minimum=1)
    NFT_DETECTION_CACHE_SECONDS = env_int("NFT_DETECTION_CACHE_SECONDS", 300, minimum=1)
    ERC6551_REGISTRY = env_str("ERC6551_REGISTRY", "0x000000006551c19487814612e58FE06813775758") or ""
    # Tokenbound's v3 account proxy; any ERC-6551 account implementation may be configured.
    ERC6551_IMPLEMENTATION = env_str("ERC6551_IMPLEMENTATION", "0x55266d75D1a14E4572138116aF39863Ed6596E7F") or ""
    ERC6551_SALT = env_int("ERC6551_SALT", 0, minimum=0)
    ONBOARDING_SESSION_SECONDS = env_int("ONBOARDING_SESSION_SECONDS", 3600, minimum=60)
    # /metrics: a bearer token and/or an IP allowlist (both empty: open, as on a private network).
    METRICS_BEARER_TOKEN = env_secret("METRICS_BEARER_TOKEN") or ""
    METRICS_ALLOWED_IPS = env_list("METRICS_ALLOWED_IPS", [])
    PROMETHEUS_MULTIPROC_DIR = env_str("PROMETHEUS_MULTIPROC_DIR", "") or ""
    # Conservation guard break glass: operations pass while invariants are still checked and logged.
    FINN_GUARD_BYPASS = env_bool("FINN_GUARD_BYPASS", False)
    FINN_GUARD_BYPASS_BY = env_str("FINN_GUARD_BYPASS_BY", "") or ""
    if FINN_GUARD_BYPASS and not FINN_GUARD_BYPASS_BY:
        _refuse_to_start("FINN_GUARD_BYPASS=true needs FINN_GUARD_BYPASS_BY (who turned it on)")
    # Content-Security-Policy: report-only unless enforced.
    CSP_ENFORCE = env_bool("CSP_ENFORCE", False)
    # Outbound webhooks to customers: https to public addresses only, unless this is set.
    OUTBOUND_WEBHOOKS_ALLOW_PRIVATE = env_bool("OUTBOUND_WEBHOOKS_ALLOW_PRIVATE", False)
    # The finance dashboard (/admin/dashboard/) is cached this long in Redis (at most 60 s).
    DASHBOARD_CACHE_SECONDS = min(env_int("DASHBOARD_CACHE_SECONDS", 30, minimum=1), 60)
    WAITLIST_PROJECT_NAME = env_str("WAITLIST_PROJECT_NAME", "finn") or "finn"
    WAITLIST_DESCRIPTION = (
        env_str(
            "WAITLIST_DESCRIPTION",
            "Prepaid, pay-per-request billing for AI inference: every micro-dollar accounted for,"
            " double-entry, audited, and payable with USDC over x402.",
        )
        or ""
    )
    WAITLIST_CONTACT_EMAIL = env_str("WAITLIST_CONTACT_EMAIL", "hello@finn.example") or ""
    # --- x402 pay-per-request (credits/x402.py) ---
    FEATURE_X402 = env_bool("FEATURE_X402", False)
    X402_NETWORK = env_str("X402_NETWORK", "eip155:84532") or ""
    X402_PAY_TO = (env_str("X402_PAY_TO", "") or "").lower()
    X402_FACILITATOR_URL = (env_str("X402_FACILITATOR_URL", "") or "").rstrip("/")
    X402_FACILITATOR_TIMEOUT_SECONDS = env_int("X402_FACILITATOR_TIMEOUT_SECONDS", 10, minimum=1)
    # A node of X402_NETWORK: settles the question of a settlement whose answer was lost.
    X402_RPC_URL = env_str("X402_RPC_URL", RPC_PRIMARY_URL) or ""
    # One resolver of an unknown settlement at a time, and the Retry-After its payer is told.
    X402_RESOLVE_LEASE_SECONDS = env_int("X402_RESOLVE_LEASE_SECONDS", 15, minimum=0)
    # Largest payment accepted, µUSDC (100 USDC); 0 disables the ceiling.
    X402_MAX_PAYMENT_MICRO_USDC = env_int("X402_MAX_PAYMENT_MICRO_USDC", 100_000_000, minimum=0)
    # A pay-per-request quote stays within the official x402 clients' default spend cap ($1).
    X402_MAX_QUOTE_MICRO_USDC = env_int("X402_MAX_QUOTE_MICRO_USDC", 1_000_000, minimum=1)
    # The facilitator's address an upto (Permit2) payment's witness binds; empty: upto is not offered.
    X402_UPTO_FACILITATOR_ADDRESS = (env_str("X402_UPTO_FACILITATOR_ADDRESS", "") or "").lower()
    X402_MARKUP = Decimal(env_str("X402_MARKUP", "1.0") or "1.0")
    X402_QUOTE_TTL_SECONDS = env_int("X402_QUOTE_TTL_SECONDS", 300, minimum=30)
    X402_MAX_TIMEOUT_SECONDS = env_int("X402_MAX_TIMEOUT_SECONDS", 300, minimum=30)
    X402_VERIFY_CONCURRENCY = env_int("X402_VERIFY_CONCURRENCY", 10, minimum=1)
    X402_MAX_TOKENS_LIMIT = env_int("X402_MAX_TOKENS_LIMIT", 8192, minimum=1)
    X402_BREAKER_THRESHOLD = env_int("X402_BREAKER_THRESHOLD", 3, minimum=1)
    X402_BREAKER_WINDOW_SECONDS = env_int("X402_BREAKER_WINDOW_SECONDS", 60, minimum=1)
    X402_BREAKER_COOLDOWN_SECONDS = env_int("X402_BREAKER_COOLDOWN_SECONDS", 30, minimum=0)
    # Upstream inference for paid calls; empty: only the built-in demo model `echo`.
    INFERENCE_URL = (env_str("INFERENCE_URL", "") or "").rstrip("/")
    INFERENCE_TIMEOUT_SECONDS = env_int("INFERENCE_TIMEOUT_SECONDS", 60, minimum=1)
    if not X402_MARKUP.is_finite() or X402_MARKUP < 1:
        raise ConfigurationError("X402_MARKUP must be a decimal >= 1")
    if X402_NETWORK not in ("eip155:8453", "eip155:84532"):
        raise ConfigurationError("X402_NETWORK must be eip155:8453 (Base) or eip155:84532 (Base Sepolia)")
    if X402_UPTO_FACILITATOR_ADDRESS and not re.fullmatch(r"0x[0-9a-f]{40}", X402_UPTO_FACILITATOR_ADDRESS):
        raise ConfigurationError("X402_UPTO_FACILITATOR_ADDRESS must be a 0x-prefixed 20-byte address")
    if FEATURE_X402 and not re.fullmatch(r"0x[0-9a-f]{40}", X402_PAY_TO):
        raise ConfigurationError("FEATURE_X402 is on but X402_PAY_TO is not a 0x-prefixed 20-byte address")
except (ConfigurationError, InvalidOperation) as exc:
    print(f"finn: refusing to start: {exc or 'X402_MARKUP must be a decimal'}", file=sys.stderr)
    raise SystemExit(2) from None

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_prometheus",
    "csp",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "axes",
    "finn",
    "billing",
    "credits",
    "webhooks",
    "nft",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "finn.logging.RequestContextMiddleware",
    "finn.ratelimit.RateLimitHeadersMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Serves the admin's static files under gunicorn (no separate web server).
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # request.user.is_verified(): a TOTP token verified in this login (finn.second_factor)
    "django_otp.middleware.OTPMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "finn.web.ReportingEndpointsMiddleware",
    "finn.metrics_middleware.PrometheusAfterMiddleware",
    # answers a locked-out login (django-axes); last, as its documentation asks
    "axes.middleware.AxesMiddleware",
]

# The API's hot routes (finn/wsgi.py): the same stack without the browser middleware.
API_MIDDLEWARE_PREFIXES = ["/api/v1/billing/", "/api/v1/accounts/"]
API_MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "finn.logging.RequestContextMiddleware",
    "finn.ratelimit.RateLimitHeadersMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "finn.metrics_middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "finn.urls"
WSGI_APPLICATION = "finn.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# No health check (a SELECT 1 before each request's first query): a connection that broke
# raises on its first statement, the request answers 503 database_unavailable
# (finn.errors), and Django drops the connection at the request's end.


def _database_settings(url: str) -> dict[str, Any]:
    """``dj_database_url.parse``, plus several hosts: ``postgres://u@h1:5432,h2:5432/db?target_session_attrs=read-write``.

    libpq takes comma-separated hosts and ports and tries them in order; with
    ``target_session_attrs=read-write`` it skips a standby, so after a failover finn reconnects to
    the promoted primary by itself (README, "Failover and durability").
    """
    found = re.match(r"^(?P<scheme>[a-z0-9+]+://)(?P<user>[^@/]*@)?(?P<hosts>[^/?]*,[^/?]*)(?P<rest>[/?].*)?$", url)
    if not found:
        return dict(
            dj_database_url.parse(url, conn_max_age=60, conn_health_checks=env_bool("DB_CONN_HEALTH_CHECKS", False))
        )
    hosts, ports = [], []
    for part in found["hosts"].split(","):
        host, _, port = part.rpartition(":") if ":" in part else (part, "", "5432")
        hosts.append(host)
        ports.append(port or "5432")
    single = f"{found['scheme']}{found['user'] or ''}multihost{found['rest'] or ''}"
    parsed = dict(
        dj_database_url.parse(single, conn_max_age=60, conn_health_checks=env_bool("DB_CONN_HEALTH_CHECKS", False))
    )
    parsed["HOST"], parsed["PORT"] = ",".join(hosts), ",".join(ports)
    return parsed


_db = _database_settings(DATABASE_URL or "")
# PostgreSQL with django-prometheus's database metrics, cheap per statement (finn/db_backend).
_db["ENGINE"] = "finn.db_backend"
_db.setdefault("OPTIONS", {})
_db["OPTIONS"].setdefault("connect_timeout", 5)
DB_BEHIND_TRANSACTION_POOLER = DB_POOLER == "transaction" or (
    DB_POOLER == "" and "6432" in str(_db.get("PORT") or "").split(",")
)
if DB_BEHIND_TRANSACTION_POOLER:
    # A statement prepared on one server connection does not exist on the next one
    # ('prepared statement "_pg3_0" already exists' / 'does not exist'): never prepare, and no
    # server-side cursors (they outlive the transaction that a pooler scopes them to).
    if env_str("DB_PREPARED_STATEMENTS") is not None and DB_PREPARED_STATEMENTS:
        _refuse_to_start(
            "DB_PREPARED_STATEMENTS=true cannot work behind a transaction-mode pooler"
            " (DB_POOLER=transaction, or port 6432); unset it, or set DB_POOLER=none for a direct connection"
        )
    DB_PREPARED_STATEMENTS = False
    _db["OPTIONS"]["prepare_threshold"] = None
    _db["DISABLE_SERVER_SIDE_CURSORS"] = True
elif DB_PREPARED_STATEMENTS:
    # Server-side binding lets psycopg prepare statements it has run 5 times:
    # planning the API-key lookup (a 3-table join) cost more than running it.
    _db["OPTIONS"].setdefault("server_side_binding", True)
    _db["OPTIONS"].setdefault("prepare_threshold", 5)
_db["TEST"] = {"NAME": env_str("TEST_DATABASE_NAME", f"test_{_db.get('NAME') or 'finn'}")}
DATABASES = {"default": _db}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "finn:cache",
        "OPTIONS": {
            "SOCKET_CONNECT_TIMEOUT": 1,
            "SOCKET_TIMEOUT": 1,
        },
    }
}

# Admin sign-in (README "Security"): django-axes counts failed logins in Postgres (its database
# handler: no cache, so lockout keeps working with Redis down) and locks out an IP address, and
# separately a username, after AXES_FAILURE_LIMIT failures, for AXES_COOLOFF_MINUTES; a success
# resets the count. Unlock early: `manage.py axes_reset_username <name>` / `axes_reset_ip <ip>`.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_HANDLER = "axes.handlers.database.AxesDatabaseHandler"
AXES_FAILURE_LIMIT = env_int("AXES_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("AXES_COOLOFF_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = ["ip_address", "username"]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "finn.second_factor.axes_client_ip"
AXES_LOCKOUT_TEMPLATE = "admin/locked_out.html"
AXES_VERBOSE = False
# TOTP (django-otp): the second factor of finance staff; enrolled by `manage.py finn_otp_enroll`.
OTP_TOTP_ISSUER = env_str("OTP_TOTP_ISSUER", "finn")

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# One policy for every page (waitlist, admin, API): no 'unsafe-inline', no 'unsafe-eval';
# inline <script>/<style> need the per-response nonce ({{ request.csp_nonce }}).
_CSP_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF, NONCE],
        "style-src": [SELF, NONCE],
        "img-src": [SELF, "data:"],
        "frame-ancestors": [NONE],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "report-uri": "/api/v1/csp-report",
        "report-to": "csp-endpoint",
    }
}
CONTENT_SECURITY_POLICY = _CSP_POLICY if CSP_ENFORCE else None
CONTENT_SECURITY_POLICY_REPORT_ONLY = None if CSP_ENFORCE else _CSP_POLICY

CSRF_FAILURE_VIEW = "finn.web.csrf_failure"

SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
# HTTPS everywhere unless DEBUG (`make run` and the test settings turn the redirect off for
# their plain-HTTP servers); health and metrics stay reachable over HTTP for probes.
try:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
    SECURE_REDIRECT_EXEMPT = [r"^health$", r"^health/security$", r"^metrics$"]
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31_536_000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)
    if env_bool("SECURE_PROXY_SSL", False):  # behind a TLS-terminating proxy that sets X-Forwarded-Proto
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
except ConfigurationError as exc:
    print(f"finn: refusing to start: {exc}", file=sys.stderr)
    raise SystemExit(2) from None

# API request bodies (DRF's parser, finn.parsers) are read up to this size; larger → 413.
API_MAX_BODY_BYTES = 1024 * 1024

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "credits.authentication.ApiKeyAuthentication",
        "credits.authentication.JwtAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["finn.parsers.UntrustedJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "finn.errors.api_exception_handler",
    "DEFAULT_THROTTLE_CLASSES": ["finn.ratelimit.DefaultThrottle"],
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "finn billing API",
    "DESCRIPTION": "Prepaid credit for pay-per-request AI inference: reserve, commit, release, void.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "SWAGGER_UI_DIST": "SIDECAR",  # served from finn's static files: no CDN (finn.api_docs)
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "REDOC_UI_SETTINGS": {"disableSearch": True},  # its search runs in a blob: worker, which the CSP refuses
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "finn.openapi.shared_refusals",
    ],
}

# --- Celery -----------------------------------------------------------------
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE = beat_schedule(reconciliation_interval_seconds=RECONCILIATION_INTERVAL_SECONDS)


def _rate(name: str, default: str) -> tuple[int, int]:
    raw = env_str(name, default) or default
    try:
        count, window = (int(part) for part in raw.split("/"))
        if count < 1 or window < 1:
            raise ValueError
    except ValueError:
        print(f"finn: refusing to start: {name} must look like 60/60 (requests/seconds), got {raw!r}", file=sys.stderr)
        raise SystemExit(2) from None
    return count, window


# Requests per window (seconds), per tier; sliding windows in Redis.
RATE_LIMITS = {
    "free": _rate("RATE_LIMIT_FREE", "60/60"),  # per IP, unauthenticated endpoints
    "x402": _rate("RATE_LIMIT_X402", "30/60"),  # per paying wallet
    "x402_quote": _rate("RATE_LIMIT_X402_QUOTE", "60/60"),  # per IP, x402 quotes (402 answers)
    "waitlist": _rate("RATE_LIMIT_WAITLIST", "10/60"),  # per IP, waitlist signups
    "csp_report": _rate("RATE_LIMIT_CSP_REPORT", "120/60"),  # per IP, CSP violation reports
    "challenge": _rate("RATE_LIMIT_CHALLENGE", "120/60"),  # per IP, sign-in challenges
    # per API key: a gateway's service key bills every inference call twice (reserve, commit);
    # a key's own limit (ApiKey.rate_limit_per_minute, set in the admin) overrides it
    "api_key": _rate("RATE_LIMIT_API_KEY", "100000/60"),
    "session": _rate("RATE_LIMIT_SESSION", "60/60"),  # per signed-in wallet (SIWE session): end users
    "webhook": _rate("RATE_LIMIT_WEBHOOK", "15000/60"),  # per IP: providers deliver bursts from few IPs
}

# Delay before retry n (1-based) of a failed finalize attempt, in seconds.
FINALIZE_RETRY_DELAYS = [1, 2, 4, 8, 16]

# --- Logging ----------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_context": {"()": "finn.logging.RequestContextFilter"}},
    "formatters": {
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        }
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json",
            "filters": ["request_context"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # One INFO line per outbound request is noise; failures still log.
        "httpx": {"level": "WARNING"},
        "axes": {"level": "WARNING"},  # each success is INFO; failures and lockouts stay
        "httpcore": {"level": "WARNING"},
    },
}

# --- Money units ------------------------------------------------------------
# Frozen onto every billing entry at reserve time (exchange-rate snapshot).
try:
    CREDIT_UNITS_PER_USD = env_int("CREDIT_UNITS_PER_USD", 100, minimum=1)
    USD_USDC_RATE = Decimal(env_str("USD_USDC_RATE", "1.0") or "1.0")
    if not USD_USDC_RATE.is_finite() or USD_USDC_RATE <= 0:
        raise ConfigurationError("USD_USDC_RATE must be a positive decimal")
    # A member badge bought from prepaid credit (µUSD; default 4.99 USD).
    BADGE_PRICE_MICRO_USD = env_int("BADGE_PRICE_MICRO_USD", 4_990_000, minimum=1)
    _pricing_json = env_json("FINN_MODEL_PRICING_JSON", None)
    # µUSD per million tokens (input, output) by model.
    MODEL_PRICING = default_pricing() if _pricing_json is None else parse_model_pricing(_pricing_json)
except (ConfigurationError, InvalidOperation, PricingConfigError) as exc:
    print(f"finn: refusing to start: {exc or 'USD_USDC_RATE must be a decimal'}", file=sys.stderr)
    raise SystemExit(2) from None
