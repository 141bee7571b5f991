"""The OpenAPI 3.0 document of the terminal's pull API (served at /api/v1/openapi.json, checked by
schemathesis in tests/test_pullapi.py)."""

from __future__ import annotations

MAX_SEQ = 2**62

_NULLABLE_STR = {"type": "string", "nullable": True}
_NULLABLE_INT = {"type": "integer", "nullable": True}
_NULLABLE_NUM = {"type": "number", "nullable": True}

RECORD = {
    "type": "object",
    "required": ["log_id", "seq", "hash", "prev_hash", "employee", "method", "kind", "details", "boot_id",
                 "monoraw_ns", "boottime_ns", "realtime_ns"],
    "properties": {
        "log_id": {"type": "string"}, "seq": {"type": "integer", "minimum": 1},
        "hash": {"type": "string"}, "prev_hash": {"type": "string"},
        "employee": {"type": "string"}, "method": {"type": "string", "enum": ["face", "finger", "pin"]},
        "kind": {"type": "string"}, "details": {"type": "object"},
        "boot_id": {"type": "string"}, "monoraw_ns": {"type": "integer"}, "boottime_ns": {"type": "integer"},
        "realtime_ns": {"type": "integer"}, "timex_status": _NULLABLE_INT, "maxerror_us": _NULLABLE_INT,
        "latitude": _NULLABLE_NUM, "longitude": _NULLABLE_NUM,
        "photo_path": _NULLABLE_STR, "photo_sha256": _NULLABLE_STR,
        "utc": _NULLABLE_STR, "earliest": _NULLABLE_STR, "latest": _NULLABLE_STR, "basis": _NULLABLE_STR,
        "flags": {"type": "array", "items": {"type": "string"}},
    },
}

CHECKPOINT = {
    "type": "object", "nullable": True,
    "required": ["log_id", "seq", "hash", "signed_realtime_ns", "public_key", "signature"],
    "properties": {"log_id": {"type": "string"}, "seq": {"type": "integer"}, "hash": {"type": "string"},
                   "signed_realtime_ns": {"type": "integer"}, "public_key": {"type": "string"},
                   "signature": {"type": "string"}},
}

FAULT_EVENT = {
    "type": "object",
    "required": ["id", "fault_key", "event", "part", "category", "message", "realtime_ns"],
    "properties": {
        "id": {"type": "integer"}, "fault_key": {"type": "string"},
        "event": {"type": "string", "enum": ["raised", "cleared", "report"]},
        "part": _NULLABLE_STR, "category": _NULLABLE_STR, "message": _NULLABLE_STR,
        "diagnostics": {}, "photo_path": _NULLABLE_STR, "photo_sha256": _NULLABLE_STR,
        "realtime_ns": _NULLABLE_INT,
    },
}

ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}


def _error(description: str) -> dict:
    schema = {"$ref": "#/components/schemas/Error"}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ok(schema: dict, description: str) -> dict:
    return {"200": {"description": description, "content": {"application/json": {"schema": schema}}},
            "400": _error("malformed request (bad query parameter)"),
            "401": _error("missing or wrong bearer token"),
            "429": _error("too many requests from this client; see Retry-After"),
            "503": _error("the punch log is not available on this terminal")}


def _int_param(name: str, description: str, default: int, lo: int, hi: int) -> dict:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": {"type": "integer", "minimum": lo, "maximum": hi, "default": default}}


def document(max_limit: int) -> dict:
    punches = {
        "type": "object",
        "required": ["device", "log_id", "records", "cursor", "next_after_seq", "more", "head", "checkpoint"],
        "properties": {
            "device": {"type": "string"}, "log_id": {"type": "string"},
            "records": {"type": "array", "items": {"$ref": "#/components/schemas/Record"}},
            "cursor": {"type": "object", "required": ["after_seq"], "properties": {"after_seq": {"type": "integer"}}},
            "next_after_seq": {"type": "integer"}, "more": {"type": "boolean"},
            "head": {"type": "object", "required": ["seq", "hash"],
                     "properties": {"seq": {"type": "integer"}, "hash": {"type": "string"}}},
            "checkpoint": {"$ref": "#/components/schemas/Checkpoint"},
        },
    }
    faults = {"type": "object", "required": ["events", "next_after_id", "more", "supported"],
              "properties": {"events": {"type": "array", "items": {"$ref": "#/components/schemas/FaultEvent"}},
                             "next_after_id": {"type": "integer"}, "more": {"type": "boolean"},
                             "supported": {"type": "boolean"}}}
    health = {"type": "object", "required": ["ok", "device", "version", "log_id", "head", "checkpoint"],
              "properties": {"ok": {"type": "boolean"}, "device": {"type": "string"}, "version": {"type": "string"},
                             "log_id": {"type": "string"}, "head": {"type": "object"},
                             "checkpoint": {"$ref": "#/components/schemas/Checkpoint"},
                             "time": {"type": "object", "nullable": True}, "status": {"type": "object"}}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "presensi-edge terminal pull API", "version": "1",
                 "description": "For central servers that pull punches from the terminal. Every operation needs "
                                "`Authorization: Bearer <[web] token>`. Records are the hash-chained punch log "
                                "(verify with the device's public key from the checkpoint). For a client "
                                "certificate, put a TLS proxy that requires one (nginx `ssl_verify_client on`, "
                                "stunnel `verify=2`) in front of [web] listen bound to 127.0.0.1."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Record": RECORD, "Checkpoint": CHECKPOINT, "FaultEvent": FAULT_EVENT, "Error": ERROR},
        },
        "security": [{"bearer": []}],
        "paths": {
            "/api/v1/punches": {"get": {
                "operationId": "listPunches", "summary": "punches with seq > after_seq, oldest first",
                "parameters": [
                    _int_param("after_seq", "cursor: return punches after this seq", 0, 0, MAX_SEQ),
                    _int_param("limit", "most records in this page", min(500, max_limit), 1, max_limit)],
                "responses": _ok(punches, "a page of records, the next cursor and the latest signed checkpoint")}},
            "/api/v1/health": {"get": {
                "operationId": "health", "summary": "the terminal's health at a glance",
                "responses": _ok(health, "health report")}},
            "/api/v1/faults": {"get": {
                "operationId": "listFaults", "summary": "fault events with id > after_id, oldest first",
                "parameters": [_int_param("after_id", "cursor: return events after this id", 0, 0, MAX_SEQ),
                               _int_param("limit", "most events in this page", 500, 1, max_limit)],
                "responses": _ok(faults, "a page of fault events")}},
        },
    }
