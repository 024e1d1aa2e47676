"""Prometheus metrics of the credits app."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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

# Estimate accuracy of metered entries (actual / hold at commit), per model: how to size holds.
ESTIMATE_RATIO_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 5.0)
estimate_accuracy_ratio = Histogram(
    "finn_estimate_accuracy_ratio",
    "Actual cost / held estimate of metered commits, per model (1 = the hold was exact).",
    ["model"],
    buckets=ESTIMATE_RATIO_BUCKETS,
)
metered_commits_total = Counter(
    "finn_metered_commits_total",
    "Metered commits per model; outcome overcapture = charged above the hold.",
    ["model", "outcome"],
)

x402_settlements_resolved_total = Counter(
    "finn_x402_settlements_resolved_total",
    "x402 settlements of unknown outcome resolved: settled or not_settled.",
    ["outcome"],
)
x402_settlements_pending = Gauge(
    "finn_x402_settlements_pending",
    "x402 payments whose settlement outcome is still unknown (last resolver run).",
    multiprocess_mode="mostrecent",
)
