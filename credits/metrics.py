"""Prometheus metrics of the credits app."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

nonces_deleted_total = Counter("nonce_cleanup_deleted_total", "Used nonces deleted by the cleanup job.")
nonce_cleanup_duration_seconds = Gauge(
    "finn_credits_nonce_cleanup_duration_seconds",
    "Duration of the last nonce cleanup run.",
    multiprocess_mode="mostrecent",
)
nonce_cleanup_failures_total = Counter("finn_credits_nonce_cleanup_failures_total", "Nonce cleanup runs that failed.")
nonce_replays_total = Counter("finn_credits_nonce_replays_total", "Nonce consumptions refused as replays.", ["kind"])
nonce_cleanup_last_success = Gauge(
    "nonce_cleanup_last_success_timestamp_seconds",
    "When the used-nonce cleanup last succeeded (unix time).",
    multiprocess_mode="max",
)
