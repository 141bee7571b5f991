"""The OpenAPI 3.0 document of the reference central server's sync API (served at /api/v1/openapi.json).
Kept as data beside the handlers it describes; tests run schemathesis against it."""

from __future__ import annotations

from terminal import __version__

INT64 = {"type": "integer", "minimum": -(2**63 - 1), "maximum": 2**63 - 1}
SEQ = {"type": "integer", "minimum": 1, "maximum": 2**62}
# Text the databases store as-is: no NUL (PostgreSQL text cannot hold it). Free-form objects (details,
# diagnostics, health) are stored as JSON text and may hold anything.
TEXT = {"type": "string", "pattern": "^[^\\u0000]*$"}
NULLABLE_STR = {**TEXT, "nullable": True}
DEGREES = {"type": "number", "minimum": -180, "maximum": 180, "nullable": True}
HEX64 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
ERROR = {"type": "object", "required": ["error"], "properties": {"error": TEXT}}


def _json(schema: dict) -> dict:
    return {"content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict:
    text = {400: "malformed request", 401: "missing or wrong device token", 403: "token of another device",
            404: "no such resource", 413: "body too large", 503: "time service not available"}
    return {str(c): {"description": text[c], **_json({"$ref": "#/components/schemas/Error"})} for c in codes}


RECORD = {
    "type": "object",
    "required": ["log_id", "seq", "employee", "method", "boot_id", "monoraw_ns", "boottime_ns", "realtime_ns",
                 "prev_hash", "hash"],
    "properties": {
        "log_id": TEXT, "seq": SEQ, "employee": TEXT,
        "method": TEXT, "kind": TEXT,
        "details": {"type": "object"}, "boot_id": TEXT,
        "monoraw_ns": INT64, "boottime_ns": INT64, "realtime_ns": INT64,
        "timex_status": {**INT64, "nullable": True}, "maxerror_us": {**INT64, "nullable": True},
        "latitude": DEGREES, "longitude": DEGREES,
        "photo_sha256": NULLABLE_STR, "prev_hash": HEX64, "hash": HEX64,
        "utc": NULLABLE_STR, "earliest": NULLABLE_STR, "latest": NULLABLE_STR, "basis": NULLABLE_STR,
        "flags": {"type": "array", "items": TEXT},
    },
}
CHECKPOINT = {
    "type": "object", "required": ["log_id", "seq", "hash", "signature"],
    "properties": {"log_id": TEXT, "seq": SEQ, "hash": TEXT,
                   "signature": TEXT, "public_key": TEXT,
                   "signed_realtime_ns": INT64},
}
BATCH = {
    "type": "object", "required": ["log_id", "records"],
    "properties": {
        "log_id": {**TEXT, "minLength": 1},
        "after_seq": {"type": "integer", "minimum": 0, "maximum": 2**62,
                      "description": "the terminal holds every record it has after this seq in `records`"},
        "records": {"type": "array", "items": {"$ref": "#/components/schemas/PunchRecord"}, "maxItems": 10000},
        "checkpoints": {"type": "array", "items": {"$ref": "#/components/schemas/Checkpoint"}},
    },
}
ACK = {"type": "object", "required": ["acked_through"],
       "properties": {"acked_through": {"type": "integer"}, "stored": {"type": "integer"},
                      "duplicates": {"type": "integer"}, "flagged": {"type": "integer"}}}
HEARTBEAT = {
    "type": "object",
    "properties": {
        "version": {"type": "string"}, "log_id": TEXT,
        "head": {"type": "object", "properties": {"seq": {"type": "integer", "minimum": 0, "maximum": 2**62},
                                                  "hash": {**TEXT, "nullable": True}}},
        "backlog": {"type": "integer"}, "acked_seq": {"type": "integer"}, "health": {"type": "object"},
    },
}
FAULTS = {
    "type": "object", "required": ["events"],
    "properties": {"events": {"type": "array", "maxItems": 10000, "items": {
        "type": "object", "required": ["id"],
        "properties": {"id": {"type": "integer", "minimum": 1, "maximum": 2**62},
                       "fault_key": NULLABLE_STR, "event": NULLABLE_STR, "part": NULLABLE_STR,
                       "category": NULLABLE_STR, "message": NULLABLE_STR, "diagnostics": {},
                       "photo_sha256": NULLABLE_STR, "realtime_ns": {**INT64, "nullable": True}}}}},
}
TIMES = {
    "type": "object", "required": ["log_id", "times"],
    "properties": {"log_id": TEXT, "times": {"type": "array", "maxItems": 10000, "items": {
        "type": "object", "required": ["seq"],
        "properties": {"seq": SEQ, "utc": NULLABLE_STR, "earliest": NULLABLE_STR, "latest": NULLABLE_STR,
                       "basis": NULLABLE_STR, "flags": {"type": "array", "items": TEXT}}}}},
}
TIME_REQUEST = {
    "type": "object", "required": ["nonce", "device_id"],
    "properties": {
        "nonce": {"type": "string", "pattern": "^([A-Za-z0-9+/]{4}){6,16}$",
                  "description": "base64 of 16 to 64 random bytes"},
        "device_id": {**TEXT, "minLength": 1, "maxLength": 128,
                      "description": "must be the device the token belongs to (else 403)"},
        "chain_head": {"type": "object", "nullable": True, "required": ["seq", "hash"],
                       "additionalProperties": False,
                       "properties": {"seq": {"type": "integer", "minimum": 0, "maximum": 2**62},
                                      "hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"}}},
    },
}
DEVICE_PARAM = {"name": "device_id", "in": "path", "required": True, "schema": TEXT}


def _op(summary: str, body: dict | None, ok: dict, *errors: int, params=(DEVICE_PARAM,)) -> dict:
    op = {"summary": summary, "parameters": list(params), "responses": {**ok, **_errors(*errors)}}
    if body is not None:
        op["requestBody"] = {"required": True, **_json(body)}
    return op


def document() -> dict:
    dev = "/api/v1/devices/{device_id}"
    return {
        "openapi": "3.0.3",
        "info": {"title": "presensi-edge reference central server", "version": __version__,
                 "description": "Sync API for attendance terminals: push of hash-chained punches, heartbeat, "
                                "fault reports, photos, corrected times, signed roster bundles and time."},
        "components": {
            "securitySchemes": {"device": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": ERROR, "PunchRecord": RECORD, "Checkpoint": CHECKPOINT},
        },
        "security": [{"device": []}],
        "paths": {
            f"{dev}/punches": {"post": _op(
                "Deliver a batch of punches (idempotent; dedupe on device, log_id, seq)", BATCH,
                {"200": {"description": "stored; acked_through = highest contiguous seq", **_json(ACK)}},
                400, 401, 403, 413)},
            f"{dev}/heartbeat": {"post": _op(
                "Small liveness report sent even while bulk upload fails", HEARTBEAT,
                {"200": {"description": "recorded", **_json({
                    "type": "object", "required": ["ok", "acked_through"],
                    "properties": {"ok": {"type": "boolean"}, "acked_through": {"type": "integer"},
                                   "server_time_ns": {"type": "integer"}}})}},
                400, 401, 403, 413)},
            f"{dev}/faults": {"post": _op(
                "Fault events (raised, cleared, report) from the terminal's fault_events table", FAULTS,
                {"200": {"description": "stored", **_json({
                    "type": "object", "required": ["acked_through"],
                    "properties": {"acked_through": {"type": "integer"}}})}},
                400, 401, 403, 413)},
            f"{dev}/punch-times": {"post": _op(
                "Re-anchored (derived) times of stored punches; raw fields are never changed", TIMES,
                {"200": {"description": "updated", **_json({
                    "type": "object", "required": ["updated"], "properties": {"updated": {"type": "integer"}}})}},
                400, 401, 403, 413)},
            dev + "/photos/{sha256}": {"put": {
                **_op("Upload a punch photo (JPEG) addressed by its SHA-256", None,
                      {"200": {"description": "already stored", **_json({"type": "object"})},
                       "201": {"description": "stored", **_json({"type": "object"})}},
                      400, 401, 403, 413,
                      params=(DEVICE_PARAM, {"name": "sha256", "in": "path", "required": True,
                                             "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"}})),
                "requestBody": {"required": True, "content": {"image/jpeg": {
                    "schema": {"type": "string", "format": "binary"}}}},
            }},
            f"{dev}/roster": {"get": _op(
                "The latest signed roster bundle newer than `since`", None,
                {"200": {"description": "a signed bundle (sync/wire/rosterbundle.py format)",
                         "content": {"application/octet-stream": {"schema": {"type": "string",
                                                                             "format": "binary"}}}},
                 "204": {"description": "no roster published yet"},
                 "304": {"description": "the terminal already has the latest version"}},
                400, 401, 403,
                params=(DEVICE_PARAM, {"name": "since", "in": "query", "required": False,
                                       "schema": {"type": "integer", "minimum": 0, "maximum": 2**62}}))},
            "/api/v1/time": {"post": {
                "summary": "Signed time answer (see sync/device/time_client.py)",
                "requestBody": {"required": True, **_json(TIME_REQUEST)},
                "responses": {"200": {"description": "signed answer", **_json({"type": "object"})},
                              **_errors(400, 401, 403, 413, 503)},
            }},
        },
    }
