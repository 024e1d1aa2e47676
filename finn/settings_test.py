"""Settings for the test suite: the real settings with test-only defaults.

Tests use real PostgreSQL and Redis; only the database name and Redis DB
number differ so a test run never touches the data of `make run`.
"""

from __future__ import annotations

import os

os.environ.setdefault("SECRET_KEY", "finn-test-only-secret-key-not-for-production")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/15")
os.environ.setdefault(
    "JWT_SIGNING_KEY_FILE",
    os.path.join(os.path.dirname(os.path.dirname(__file__)), "tests", "keys", "jwt_es256_test.pem"),
)
# The test client and live servers speak plain HTTP.
os.environ.setdefault("SECURE_SSL_REDIRECT", "false")
os.environ.setdefault("OUTBOUND_WEBHOOKS_ALLOW_PRIVATE", "true")  # receivers are local test servers
# Lookups go to Redis/PostgreSQL each time (tests/credits/test_api_key_cache.py turns the
# in-process copy on where it is the subject).
os.environ.setdefault("API_KEY_LOCAL_CACHE_SECONDS", "0")
# Balance-cache writes inline on commit, so a test can read Redis right after a service call
# (tests/billing/test_balance_cache.py runs the background writer where it is the subject).
os.environ.setdefault("BALANCE_CACHE_ASYNC", "false")

from finn.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# Static files straight from the apps (no collectstatic in a fresh clone).
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
