"""A local fake of the upstream ledger (an HTTP server on 127.0.0.1).

External services are replaced by real servers on loopback, never by
patching finn's code. Behaviour is set per test: status codes in order, a
delay, or garbage bytes instead of HTTP.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _QuietHandler(BaseHTTPRequestHandler):
    """A loopback fake's handler: no access log; a client hanging up mid-answer is expected."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def handle(self) -> None:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            super().handle()

    def _send_json(self, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextmanager
def _serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve ``handler`` on a free loopback port for the block; yields ``http://127.0.0.1:<port>``."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Upstream:
    statuses: list[int] = field(default_factory=lambda: [200])  # used in order; the last repeats
    delay_seconds: float = 0.0
    first_delay_seconds: float | None = None
    garbage: bool = False
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def next_status(self) -> int:
        with self.lock:
            index = min(len(self.requests) - 1, len(self.statuses) - 1)
            return self.statuses[max(index, 0)]


@contextmanager
def fake_upstream(**behaviour: Any) -> Iterator[Upstream]:
    upstream = Upstream(**behaviour)

    class Handler(_QuietHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            with upstream.lock:
                first = not upstream.requests
                upstream.requests.append(body)
                upstream.headers.append(dict(self.headers))
                upstream.in_flight += 1
                upstream.max_in_flight = max(upstream.max_in_flight, upstream.in_flight)
            try:
                delay = (
                    upstream.first_delay_seconds
                    if first and upstream.first_delay_seconds is not None
                    else upstream.delay_seconds
                )
                if delay:
                    time.sleep(delay)
                if upstream.garbage:
                    self.wfile.write(b"\x00\x01 this is not HTTP \xff\r\n\r\n")
                    return
                status = upstream.next_status()
                self._send_json(status, {"ok": True})
            finally:
                with upstream.lock:
                    upstream.in_flight -= 1

    with _serving(Handler) as base:
        upstream.url = f"{base}/finalize"
        yield upstream


@contextmanager
def fake_json_rpc(answers: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A JSON-RPC node on loopback: ``answers[method]`` is the result (or a callable of params)."""
    state: dict[str, Any] = {"calls": [], "url": ""}

    class Handler(_QuietHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            request = json.loads(self.rfile.read(length) or b"{}")
            batch = request if isinstance(request, list) else [request]
            replies = []
            for call in batch:
                state["calls"].append(call)
                method = call.get("method")
                if method not in answers:  # a missing method is an error; a None answer is a null result
                    replies.append({"jsonrpc": "2.0", "id": call.get("id"), "error": {"code": -32601, "message": "no"}})
                    continue
                answer = answers[method]
                if callable(answer):
                    answer = answer(call.get("params"))
                replies.append({"jsonrpc": "2.0", "id": call.get("id"), "result": answer})
            self._send_json(200, replies if isinstance(request, list) else replies[0])

    with _serving(Handler) as base:
        state["url"] = f"{base}/"
        yield state


@dataclass
class Facilitator:
    """Behaviour of the fake x402 facilitator: ``mode`` is ok | refuse | http500 | garbage | slow.

    ``settle_mode`` is what ``/settle`` does once ``/verify`` passed: ``ok``; ``apply_then_500``,
    ``apply_then_pending`` (x402's ``settlement_pending`` with the tx) and ``apply_then_slow`` move
    the funds and lose the answer; ``lost_unapplied`` answers 500 without moving anything. Moved
    funds are written to ``chain`` (nonce → tx hash) and ``transfers`` (tx → from, to, value): what
    ``fake_chain`` serves. A nonce already on chain cannot move funds again.
    """

    mode: str = "ok"
    delay_seconds: float = 0.0
    settle_mode: str = "ok"
    verify_calls: list[dict[str, Any]] = field(default_factory=list)
    settle_calls: list[dict[str, Any]] = field(default_factory=list)
    chain: dict[str, str] = field(default_factory=dict)
    transfers: dict[str, tuple[str, str, int]] = field(default_factory=dict)
    permit2_used: set[tuple[str, int]] = field(default_factory=set)  # (owner, nonce) of upto settlements
    address: str = "0x" + "fa" * 20  # the facilitator's signer (bound by an upto witness)
    url: str = ""


@contextmanager
def fake_facilitator(**behaviour: Any) -> Iterator[Facilitator]:
    """An x402 facilitator on loopback: ``/supported``, ``/verify``, ``/settle`` (reference bodies)."""
    import hashlib

    state = Facilitator(**behaviour)

    class Handler(_QuietHandler):
        def do_GET(self) -> None:
            kinds = [
                {"x402Version": 2, "scheme": "exact", "network": "eip155:84532"},
                {"x402Version": 2, "scheme": "upto", "network": "eip155:84532",
                 "extra": {"facilitatorAddress": state.address}},
            ]  # fmt: skip
            self._send_json(200, {"kinds": kinds, "extensions": [], "signers": {"eip155:*": []}})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            request = json.loads(self.rfile.read(length) or b"{}")
            (state.verify_calls if self.path.endswith("/verify") else state.settle_calls).append(request)
            if state.mode == "slow":
                time.sleep(state.delay_seconds)
            if state.mode == "garbage":
                self.wfile.write(b"\x00 not http \xff\r\n\r\n")
                return
            if state.mode == "http500":
                self._send_json(500, {"error": "boom"})
                return
            payload = request.get("paymentPayload", {}).get("payload", {})
            requirements = request.get("paymentRequirements", {})
            amount = requirements.get("amount") or requirements.get("maxAmountRequired")
            permit = payload.get("permit2Authorization")
            if isinstance(permit, dict):  # upto: any amount up to what the permit allows, to its witness
                authorization = {"from": permit.get("from"), "to": permit.get("witness", {}).get("to"),
                                 "nonce": f"0x{int(permit.get('nonce', '0')):064x}"}  # fmt: skip
                valid = (
                    state.mode == "ok"
                    and int(amount) <= int(permit.get("permitted", {}).get("amount", "0"))
                    and str(authorization["to"]).lower() == str(requirements.get("payTo", "")).lower()
                    and str(permit.get("witness", {}).get("facilitator", "")).lower() == state.address
                )
            else:
                authorization = payload.get("authorization", {})
                valid = (
                    state.mode == "ok"
                    and authorization.get("value") == amount
                    and str(authorization.get("to", "")).lower() == str(requirements.get("payTo", "")).lower()
                )
            payer = authorization.get("from")
            if self.path.endswith("/verify"):
                answer: dict[str, Any] = {"isValid": valid, "payer": payer}
                if not valid:
                    answer["invalidReason"] = "invalid_exact_evm_payload_signature"
                self._send_json(200, answer)
                return
            network = requirements.get("network", "")
            if not valid:
                self._send_json(
                    200, {"success": False, "errorReason": "transaction_failed", "transaction": "", "network": network}
                )
                return
            nonce = str(authorization.get("nonce")).lower()
            tx = "0x" + hashlib.sha256(nonce.encode()).hexdigest()
            mode = state.settle_mode
            if mode == "lost_unapplied":
                self._send_json(500, {"error": "boom"})
                return
            if nonce in state.chain:  # the token contract refuses a used authorization
                self._send_json(200, {"success": False, "errorReason": "invalid_transaction_state",
                                      "transaction": "", "network": network})  # fmt: skip
                return
            state.chain[nonce] = tx
            state.transfers[tx] = (str(payer).lower(), str(authorization.get("to")).lower(), int(amount))
            if isinstance(permit, dict):
                state.permit2_used.add((str(payer).lower(), int(nonce, 16)))
            if mode == "apply_then_500":
                self._send_json(502, {"error": "upstream timeout"})
                return
            if mode == "apply_then_pending":
                self._send_json(200, {"success": False, "errorReason": "settlement_pending", "transaction": tx,
                                      "network": network})  # fmt: skip
                return
            if mode == "apply_then_slow":
                time.sleep(state.delay_seconds)
            self._send_json(
                200, {"success": True, "transaction": tx, "network": network, "payer": payer, "amount": amount}
            )

    with _serving(Handler) as base:
        state.url = base
        yield state


@contextmanager
def fake_chain(facilitator: Facilitator, *, down: bool = False) -> Iterator[dict[str, Any]]:
    """A node of the chain the fake facilitator settles on: EIP-3009 authorizationState, the
    AuthorizationUsed log of a used nonce, and the Transfer log of its transaction."""
    from credits.x402.onchain import AUTHORIZATION_STATE, AUTHORIZATION_USED, NONCE_BITMAP, TRANSFER

    def word(value: str) -> str:
        return "0x" + value.lower().removeprefix("0x").rjust(64, "0")

    def eth_call(params: list[Any]) -> str:
        data = str(params[0]["data"]).lower()
        if data.startswith(NONCE_BITMAP):  # Permit2's bitmap word of an owner
            owner = "0x" + data[len(NONCE_BITMAP) + 24 : len(NONCE_BITMAP) + 64]
            position = int(data[len(NONCE_BITMAP) + 64 :], 16)
            bitmap = sum(1 << (n & 255) for o, n in facilitator.permit2_used if o == owner and n >> 8 == position)
            return "0x" + f"{bitmap:064x}"
        assert data.startswith(AUTHORIZATION_STATE)
        nonce = "0x" + data[len(AUTHORIZATION_STATE) + 64 :]
        return word("1" if nonce in facilitator.chain else "0")

    def get_logs(params: list[Any]) -> list[dict[str, Any]]:
        topics = params[0]["topics"]
        if topics[0] == TRANSFER:  # transfers from topics[1] to topics[2]
            return [
                {"transactionHash": tx, "topics": topics, "data": hex(value)}
                for tx, (source, target, value) in facilitator.transfers.items()
                if word(source) == topics[1] and word(target) == topics[2]
            ]
        assert topics[0] == AUTHORIZATION_USED
        tx = facilitator.chain.get(str(topics[2]).lower())
        return [] if tx is None else [{"transactionHash": tx, "topics": topics, "data": "0x"}]

    def receipt(params: list[Any]) -> dict[str, Any] | None:
        moved = facilitator.transfers.get(str(params[0]).lower())
        if moved is None:
            return None
        source, target, value = moved
        log = {"address": _ASSET, "topics": [TRANSFER, word(source), word(target)], "data": hex(value)}
        return {"status": "0x1", "logs": [log]}

    answers: dict[str, Any] = {} if down else {
        "eth_call": eth_call, "eth_blockNumber": "0x100", "eth_getLogs": get_logs,
        "eth_getTransactionReceipt": receipt,
    }  # fmt: skip
    with fake_json_rpc(answers) as node:
        yield node


_ASSET = "0x036cbd53842c5426634e7929541ec2318f3dcf7e"  # USDC on Base Sepolia (the x402 test network)


@dataclass
class NftApi:
    """The fake batch NFT API: ``owned[wallet]`` lists (contract, token id, title); ``page_size`` per page."""

    owned: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)
    page_size: int = 2
    failing: bool = False
    calls: list[dict[str, list[str]]] = field(default_factory=list)
    url: str = ""


@contextmanager
def fake_nft_api(**behaviour: Any) -> Iterator[NftApi]:
    """Speaks ``GET /getNFTsForOwner`` with ``pageKey`` paging, like Alchemy's NFT API v3."""
    from urllib.parse import parse_qs, urlparse

    state = NftApi(**behaviour)

    class Handler(_QuietHandler):
        def do_GET(self) -> None:
            query = parse_qs(urlparse(self.path).query)
            state.calls.append(query)
            if state.failing or not self.path.split("?")[0].endswith("/getNFTsForOwner"):
                self.send_response(503)
                self.end_headers()
                return
            owner = query.get("owner", [""])[0].lower()
            contracts = {c.lower() for c in query.get("contractAddresses[]", [])}
            items = [i for i in state.owned.get(owner, []) if not contracts or i[0].lower() in contracts]
            start = int(query.get("pageKey", ["0"])[0])
            page = items[start : start + state.page_size]
            body: dict[str, Any] = {
                "ownedNfts": [{"contract": {"address": c}, "tokenId": t, "name": n} for c, t, n in page],
                "totalCount": len(items),
            }
            if start + state.page_size < len(items):
                body["pageKey"] = str(start + state.page_size)
            self._send_json(200, body)

    with _serving(Handler) as base:
        state.url = f"{base}/nft/v3/test-key"
        yield state
