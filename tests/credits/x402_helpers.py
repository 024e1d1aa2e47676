"""Sign x402 payments the way a client does (eth-account, EIP-712 TransferWithAuthorization)."""

from __future__ import annotations

import base64
import json
import secrets
import time
from typing import Any

from eth_account import Account
from eth_account.messages import encode_typed_data

from credits.x402.protocol import NETWORKS

PAY_TO = "0x7e2ed42400000000000000000000000000b5b1eb"
PAYER_KEY = "0x" + "11" * 32
OTHER_KEY = "0x" + "22" * 32
PAYER = Account.from_key(PAYER_KEY).address.lower()
X402_SETTINGS = {"FEATURE_X402": True, "X402_PAY_TO": PAY_TO, "X402_NETWORK": "eip155:84532"}


def b64(document: dict[str, Any]) -> str:
    return base64.b64encode(json.dumps(document).encode()).decode()


def unb64(value: str) -> Any:
    return json.loads(base64.b64decode(value))


def sign_authorization(
    authorization: dict[str, str], *, network: str = "eip155:84532", asset: str | None = None, key: str = PAYER_KEY
) -> str:
    net = NETWORKS[network]
    typed = {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            "TransferWithAuthorization": [
                {"name": "from", "type": "address"},
                {"name": "to", "type": "address"},
                {"name": "value", "type": "uint256"},
                {"name": "validAfter", "type": "uint256"},
                {"name": "validBefore", "type": "uint256"},
                {"name": "nonce", "type": "bytes32"},
            ],
        },
        "primaryType": "TransferWithAuthorization",
        "domain": {
            "name": net.eip712_name,
            "version": net.eip712_version,
            "chainId": net.chain_id,
            "verifyingContract": asset or net.usdc,
        },
        "message": {
            "from": authorization["from"],
            "to": authorization["to"],
            "value": int(authorization["value"]),
            "validAfter": int(authorization["validAfter"]),
            "validBefore": int(authorization["validBefore"]),
            "nonce": bytes.fromhex(authorization["nonce"][2:]),
        },
    }
    signed = Account.sign_message(encode_typed_data(full_message=typed), private_key=key)
    return "0x" + signed.signature.hex().removeprefix("0x")


def pay_v2(required: dict[str, Any], *, key: str = PAYER_KEY, sign_key: str | None = None, **overrides: Any) -> str:
    """A PAYMENT-SIGNATURE header answering the 402 document ``required`` (fields overridable)."""
    accepted = dict(required["accepts"][0])
    accepted.update(overrides.pop("accepted", {}))
    authorization = {
        "from": Account.from_key(key).address,
        "to": accepted["payTo"],
        "value": accepted["amount"],
        "validAfter": "0",
        "validBefore": str(int(time.time()) + 300),
        "nonce": "0x" + secrets.token_hex(32),
    }
    authorization.update({k: v for k, v in overrides.items() if k in authorization})
    signature = sign_authorization(authorization, key=sign_key or key)
    return b64(
        {
            "x402Version": 2,
            "payload": {"authorization": authorization, "signature": signature},
            "accepted": accepted,
            "resource": required.get("resource"),
        }
    )
