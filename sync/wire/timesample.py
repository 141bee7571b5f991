"""Signed time samples, the format both sides agree on (contract C2).

The terminal sends {nonce, device_id, chain_head} to POST /api/v1/time; the central server stamps t2 (on
arrival) and t3 (just before signing) and signs (protocol, nonce, device_id, chain_head, t2, t3, error bound,
whether its own clock is synchronised) with its Ed25519 key. The terminal checks the signature against the
key it pinned at set-up (sync/device/time_client.py); the server answers with `answer_time_request`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from terminal.log import chain

PROTOCOL = "presensi-time:v1"
TIME_PATH = "/api/v1/time"
HEX64 = re.compile(r"^[0-9a-f]{64}$")
SIGNED_FIELDS = ("protocol", "nonce", "device_id", "chain_head", "t2_ns", "t3_ns", "error_bound_ns",
                 "server_clock_synced")


def validate_request(request) -> dict:
    if not isinstance(request, dict):
        raise ValueError("the request must be a JSON object {nonce, device_id, chain_head}")
    nonce, device_id, head = request.get("nonce"), request.get("device_id"), request.get("chain_head")
    if not isinstance(nonce, str) or len(nonce) > 128:
        raise ValueError("nonce must be a base64 string of 16 to 64 bytes")
    try:
        raw = base64.b64decode(nonce, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("nonce must be a base64 string of 16 to 64 bytes") from None
    if not 16 <= len(raw) <= 64:
        raise ValueError("nonce must be a base64 string of 16 to 64 bytes")
    if not isinstance(device_id, str) or not 1 <= len(device_id) <= 128:
        raise ValueError("device_id must be a string of 1 to 128 characters")
    if head is not None:
        if not (isinstance(head, dict) and set(head) == {"seq", "hash"} and isinstance(head["seq"], int)
                and not isinstance(head["seq"], bool) and head["seq"] >= 0
                and isinstance(head["hash"], str) and HEX64.match(head["hash"])):
            raise ValueError("chain_head must be null or {\"seq\": int >= 0, \"hash\": 64 hex digits}")
        head = {"seq": head["seq"], "hash": head["hash"]}
    return {"nonce": nonce, "device_id": device_id, "chain_head": head}


def signed_message(answer: dict) -> bytes:
    body = {k: answer.get(k) for k in SIGNED_FIELDS}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def answer_time_request(server_key: Ed25519PrivateKey, request: dict, t2_ns: int, *, error_bound_ns: int,
                        synced: bool) -> dict:
    """The signed answer to a time request; raises ValueError on a malformed request. `error_bound_ns` and
    `synced` are the server's own clock error bound and whether its kernel says it is synchronised."""
    req = validate_request(request)
    answer = {"protocol": PROTOCOL, **req, "t2_ns": int(t2_ns), "error_bound_ns": int(error_bound_ns),
              "server_clock_synced": synced}
    answer["t3_ns"] = max(time.time_ns(), answer["t2_ns"])  # just before signing
    answer["signature"] = chain.sign_b64(server_key, signed_message(answer))
    return answer
