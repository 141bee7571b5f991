"""HTML form bodies: application/x-www-form-urlencoded and multipart/form-data (file uploads). The size of
a body is bounded before it is read, by the limit its route declares (LOGIN_LIMIT, FORM_LIMIT, MAX_FORM);
the server's body-limit middleware enforces it."""

from __future__ import annotations

from dataclasses import dataclass
from email.parser import BytesParser
from email.policy import HTTP
from urllib.parse import parse_qs

from fastapi import HTTPException, Request

MAX_FORM = 12 * 1024 * 1024  # a fault photo (10 MiB at most) plus the fields
FORM_LIMIT = 16 * 1024  # the other admin forms and JSON requests: a few short fields
LOGIN_LIMIT = 4 * 1024  # the login form: a token and a password


@dataclass
class Upload:
    filename: str
    content_type: str
    data: bytes


async def parse(req: Request) -> tuple[dict[str, str], dict[str, Upload]]:
    """(fields, files) of a POSTed form; raises HTTPException 400/415 for anything else."""
    ctype = (req.headers.get("Content-Type") or "").strip()
    body = await req.body()
    if ctype.startswith("application/x-www-form-urlencoded") or not ctype:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise HTTPException(400, "the form is not UTF-8") from None
        return {k: v[-1] for k, v in parse_qs(text, keep_blank_values=True).items()}, {}
    if ctype.startswith("multipart/form-data"):
        return _multipart(ctype, body)
    raise HTTPException(415, f"unsupported form encoding {ctype!r}")


def _multipart(ctype: str, body: bytes) -> tuple[dict[str, str], dict[str, Upload]]:
    msg = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + ctype.encode("latin-1") + b"\r\n\r\n" + body)
    if not msg.is_multipart():
        raise HTTPException(400, "malformed multipart form")
    fields, files = {}, {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        payload = part.get_payload(decode=True) or b""
        filename = part.get_filename()
        if filename is not None:
            if payload:
                files[name] = Upload(filename, part.get_content_type(), payload)
            continue
        try:
            fields[name] = payload.decode(part.get_content_charset() or "utf-8")
        except (UnicodeDecodeError, LookupError):
            raise HTTPException(400, f"form field {name!r} is not UTF-8") from None
    return fields, files


def form_body(nbytes: int, multipart: bool = False) -> dict:
    """`openapi_extra=` of a POST route taking an HTML form of at most `nbytes` (the body-limit key is
    sync/asgi.py's LIMIT_KEY; the core may not import sync/, so it is spelled here)."""
    fields = {"type": "object", "properties": {"csrf": {"type": "string"}}, "additionalProperties": True}
    content = {"application/x-www-form-urlencoded": {"schema": fields}}
    if multipart:
        content["multipart/form-data"] = {"schema": fields}
    return {"x-body-limit": nbytes, "requestBody": {"required": True, "content": content}}


def json_or_form_body(nbytes: int) -> dict:
    extra = form_body(nbytes)
    extra["requestBody"]["content"]["application/json"] = {"schema": {"type": "object"}}
    return extra
