#!/usr/bin/env python
"""Webhook acknowledgements per second and their p99 at a fixed offered rate.

    PADDLE_WEBHOOK_SECRET=... (the server's) .venv/bin/python bench/webhooks.py --rate 200 --seconds 20

Sends signed Paddle `subscription.updated` events (distinct ids) at --rate per
second to a running server (`make run` with PADDLE_WEBHOOK_SECRET set) and
prints acks/s, p50/p99 ack latency and errors. The goal: p99 ≤ 200 ms at 200/s.
The first --warmup seconds (fresh gunicorn threads open their database
connections and prepare statements) are sent at the same rate but reported
separately.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import statistics
import time
import uuid
from collections import Counter
from datetime import UTC, datetime


def signed(secret: str, community: int) -> tuple[bytes, str]:
    body = json.dumps(
        {
            "event_id": f"evt_bench_{uuid.uuid4().hex}",
            "event_type": "subscription.updated",
            "occurred_at": datetime.now(UTC).isoformat(),
            "data": {
                "id": f"sub_bench_{community}",
                "status": "active",
                "custom_data": {"community_id": f"bench-{community}"},
            },
        }
    ).encode()
    ts = int(time.time())
    h1 = hmac.new(secret.encode(), f"{ts}:".encode() + body, hashlib.sha256).hexdigest()
    return body, f"ts={ts};h1={h1}"


async def run(url: str, secret: str, rate: float, seconds: float, label: str = "measured") -> None:
    import httpx

    latencies: list[float] = []
    errors: Counter[str] = Counter()
    async with httpx.AsyncClient(timeout=10, limits=httpx.Limits(max_connections=64)) as client:

        async def send(index: int) -> None:
            body, header = signed(secret, index % 500)
            started = time.perf_counter()
            try:
                response = await client.post(
                    url, content=body, headers={"Content-Type": "application/json", "Paddle-Signature": header}
                )
            except httpx.HTTPError as exc:
                errors[type(exc).__name__] += 1
                return
            if response.status_code != 200:
                errors[str(response.status_code)] += 1
                return
            latencies.append(time.perf_counter() - started)

        tasks = []
        start = time.perf_counter()
        index = 0
        while time.perf_counter() - start < seconds:
            tasks.append(asyncio.create_task(send(index)))
            index += 1
            await asyncio.sleep(max(0.0, start + index / rate - time.perf_counter()))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000 if ordered else float("nan")
    p50 = statistics.median(ordered) * 1000 if ordered else float("nan")
    print(
        f"{label}: offered {index / elapsed:.1f}/s, acked {len(latencies) / elapsed:.1f}/s, p50 {p50:.1f} ms, p99 {p99:.1f} ms, errors {dict(errors)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000/api/v1/webhooks/paddle")
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    args = parser.parse_args()
    secret = os.environ.get("PADDLE_WEBHOOK_SECRET")
    if not secret:
        raise SystemExit("set PADDLE_WEBHOOK_SECRET to the server's value")
    if args.warmup > 0:
        asyncio.run(run(args.url, secret, args.rate, args.warmup, label="warm-up"))
    asyncio.run(run(args.url, secret, args.rate, args.seconds))


if __name__ == "__main__":
    main()
