"""The one JSON-RPC client (primary and fallback nodes from settings)."""

from __future__ import annotations

import itertools
from typing import Any

import httpx

from finn.untrusted_json import json_loads_untrusted

_ids = itertools.count(1)


class RpcUnavailable(Exception):
    """The node did not answer usefully (down, timeout, error, garbage)."""


def rpc_call(url: str, method: str, params: list[Any], *, timeout: float = 5.0) -> Any:
    if not url:
        raise RpcUnavailable("no RPC URL configured")
    try:
        response = httpx.post(
            url, json={"jsonrpc": "2.0", "id": next(_ids), "method": method, "params": params}, timeout=timeout
        )
        body = json_loads_untrusted(response.content)
    except (httpx.HTTPError, ValueError) as exc:
        raise RpcUnavailable(f"{method}: {type(exc).__name__}") from None
    if not isinstance(body, dict) or "error" in body or "result" not in body:
        raise RpcUnavailable(f"{method}: bad answer")
    return body["result"]
