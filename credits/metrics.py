"""Prometheus metrics of the credits app."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

nonces_deleted_total = Counter("finn_credits_nonces_deleted_total", "Used nonces deleted by the cleanup job.")
nonce_cleanup_duration_seconds = Gauge(
    "finn_credits_nonce_cleanup_duration_seconds",
    "Duration of the last nonce cleanup run.",
    multiprocess_mode="mostrecent",
)
nonce_cleanup_failures_total = Counter("finn_credits_nonce_cleanup_failures_total", "Nonce cleanup runs that failed.")
nonce_replays_total = Counter("finn_credits_nonce_replays_total", "Nonce consumptions refused as replays.", ["kind"])
