"""Raw-socket clients for the body-limit tests: what a hostile or broken client sends, byte by byte, so a
test can tell how much of a body the server had taken when it answered (requests would send it all)."""

from __future__ import annotations

import json
import select
import socket
from urllib.parse import urlsplit


def _connect(base_url: str) -> socket.socket:
    u = urlsplit(base_url)
    return socket.create_connection((u.hostname, u.port), timeout=10)


def _head(method: str, path: str, host: str, headers: dict) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    return "\r\n".join(lines).encode("latin-1")


def read_response(sock: socket.socket, timeout: float = 10.0) -> tuple[int, dict, bytes]:
    """(status, headers, body) of one response whose length is given by Content-Length."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed before a response: {data[:200]!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, body


def declared_length(base_url: str, method: str, path: str, length: int, headers: dict | None = None,
                    sent_body: bytes = b"") -> tuple[int, dict, bytes]:
    """Announce a body of `length` bytes, send only `sent_body` of it, and read the answer."""
    u = urlsplit(base_url)
    with _connect(base_url) as sock:
        sock.sendall(_head(method, path, u.netloc, {"Content-Length": str(length), **(headers or {})}) + sent_body)
        return read_response(sock)


def chunked_until_answer(base_url: str, method: str, path: str, headers: dict | None = None,
                         chunk: bytes = b"x" * 1024, give_up_after: int = 64 * 2**20) -> tuple[int, dict, bytes, int]:
    """Send a chunked body piece by piece until the server answers; (status, headers, body, bytes sent)."""
    u = urlsplit(base_url)
    with _connect(base_url) as sock:
        sock.sendall(_head(method, path, u.netloc, {"Transfer-Encoding": "chunked", **(headers or {})}))
        sent = 0
        piece = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
        while sent < give_up_after:
            readable, _, _ = select.select([sock], [], [], 0.02)
            if readable:
                break
            try:
                sock.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        status, hdrs, body = read_response(sock)
        return status, hdrs, body, sent


def nested(depth: int = 100_000) -> bytes:
    """A JSON text of `depth` nested lists: valid JSON, deeper than any parser's recursion."""
    return b"[" * depth + b"]" * depth


def error_of(body: bytes) -> str:
    return json.loads(body)["error"]
