"""Estimate accuracy per model: actual / hold percentiles over a window, the overcapture rate, the histogram."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from tests.conftest import post_json

RESERVE = "/api/v1/billing/entries"
MODEL = "claude-haiku-4"  # 1 / 5 µUSD per token


def percentile_cont(values: list[float], q: float) -> float:
    """PostgreSQL's percentile_cont: linear interpolation between the two nearest ranks."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _seeded_run(funded, count: int) -> list[float]:
    """``count`` metered calls of 1,000 tokens in and up to 1,000 out; output varies deterministically."""
    ratios = []
    for i in range(count):
        held = post_json(funded.client(), RESERVE, {"model": MODEL, "input_tokens": 1_000, "max_output_tokens": 1_000})
        entry = held.json()["entry"]
        output = (i * 37) % 1_200  # every 6th or so above the hold's 1,000: an overcapture
        committed = post_json(
            funded.client(),
            f"{RESERVE}/{entry['id']}/commit",
            {"usage": {"input_tokens": 1_000, "output_tokens": output}},
        )
        assert committed.status_code == 200, committed.content
        ratios.append((1_000 + 5 * output) / entry["estimated_cost"])
    return ratios


@pytest.mark.django_db
def test_accuracy_reports_the_distribution_of_actual_over_hold_for_the_callers_model(make_account) -> None:
    # given: a seeded run of 60 calls on an account that may overcapture, and another account's call
    funded = make_account(100_000_000, allow_overcapture=True)
    other = make_account(100_000_000)
    within_before = _sample("finn_metered_commits_total", model=MODEL, outcome="within")
    over_before = _sample("finn_metered_commits_total", model=MODEL, outcome="overcapture")
    count_before = _sample("finn_estimate_accuracy_ratio_count", model=MODEL)
    ratios = _seeded_run(funded, 60)
    _seeded_run(other, 1)
    # when
    mine = funded.client().get(f"/api/v1/models/{MODEL}/accuracy?window_seconds=3600")
    staff = make_account(0, staff=True).client().get(f"/api/v1/models/{MODEL}/accuracy")
    # then
    assert mine.status_code == 200, mine.content
    body = mine.json()
    print("seeded run:", body)  # the figures quoted in the README
    assert (body["scope"], body["commits"]) == ("account", 60)
    for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
        assert body["ratio"][name] == pytest.approx(percentile_cont(ratios, q), abs=1e-4), name
    overcaptures = sum(1 for r in ratios if r > 1)
    assert overcaptures > 0
    assert body["overcapture_rate"] == pytest.approx(overcaptures / 60, abs=1e-4)
    assert body["held"] == 60 * 6_000
    assert (staff.json()["scope"], staff.json()["commits"]) == ("all", 61)
    # the same ratios went to the histogram as they happened
    assert _sample("finn_estimate_accuracy_ratio_count", model=MODEL) - count_before == 61
    assert _sample("finn_metered_commits_total", model=MODEL, outcome="overcapture") - over_before == overcaptures
    assert _sample("finn_metered_commits_total", model=MODEL, outcome="within") - within_before == 61 - overcaptures


@pytest.mark.django_db
def test_accuracy_refuses_unknown_models_and_bad_windows_and_counts_nothing_when_empty(make_account) -> None:
    client = make_account(0).client()
    assert client.get("/api/v1/models/gpt-9/accuracy").json()["code"] == "unknown_model"
    assert client.get(f"/api/v1/models/{MODEL}/accuracy?window_seconds=5").status_code == 400
    assert client.get(f"/api/v1/models/{MODEL}/accuracy?window_seconds=-1").status_code == 400
    empty = client.get(f"/api/v1/models/{MODEL}/accuracy").json()
    assert (empty["commits"], empty["ratio"]["p50"], empty["overcapture_rate"]) == (0, None, None)
