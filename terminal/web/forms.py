"""HTML form bodies: application/x-www-form-urlencoded and multipart/form-data (file uploads), bounded."""

from __future__ import annotations

from dataclasses import dataclass
from email.parser import BytesParser
from email.policy import HTTP
from urllib.parse import parse_qs

from terminal.wsgi import HTTPError, Request

MAX_FORM = 12 * 1024 * 1024  # a fault photo (10 MiB at most) plus the fields


@dataclass
class Upload:
    filename: str
    content_type: str
    data: bytes


def parse(req: Request) -> tuple[dict[str, str], dict[str, Upload]]:
    """(fields, files) of a POSTed form; raises HTTPError 400/413/415 for anything else."""
    req.max_body = MAX_FORM
    ctype = (req.header("Content-Type") or "").strip()
    body = req.body()
    if ctype.startswith("application/x-www-form-urlencoded") or not ctype:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise HTTPError(400, "the form is not UTF-8") from None
        return {k: v[-1] for k, v in parse_qs(text, keep_blank_values=True).items()}, {}
    if ctype.startswith("multipart/form-data"):
        return _multipart(ctype, body)
    raise HTTPError(415, f"unsupported form encoding {ctype!r}")


def _multipart(ctype: str, body: bytes) -> tuple[dict[str, str], dict[str, Upload]]:
    msg = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + ctype.encode("latin-1") + b"\r\n\r\n" + body)
    if not msg.is_multipart():
        raise HTTPError(400, "malformed multipart form")
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
            raise HTTPError(400, f"form field {name!r} is not UTF-8") from None
    return fields, files
