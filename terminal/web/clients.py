"""Who is asking: the terminal itself, or someone on the network (possibly through a TLS proxy).

"Local" (the kiosk's own browser, allowed to watch the live streams with names and faces) means a real
loopback connection that carries no proxy header. A reverse proxy on the terminal (the documented nginx or
stunnel in front of [web] listen, docs/kiosk-and-admin.md) also connects from 127.0.0.1: the headers it
adds (X-Forwarded-For, X-Real-IP, Forwarded) mark its requests as remote. From a remote peer such headers
are ignored (anyone can write them); from a loopback peer, the address they name is the client's, for the
login back-off and the audit, so the clients behind one proxy do not share one back-off.
"""

from __future__ import annotations

import ipaddress

from fastapi import Request

PROXY_HEADERS = ("x-forwarded-for", "x-real-ip", "forwarded")


def peer(req: Request) -> str:
    """The address of the TCP peer (the proxy, when there is one)."""
    return req.client.host if req.client else ""


def _loopback(addr: str) -> bool:
    try:
        return ipaddress.ip_address(addr).is_loopback
    except ValueError:
        return False


def proxied(req: Request) -> bool:
    return any(req.headers.get(h) is not None for h in PROXY_HEADERS)


def is_local(req: Request) -> bool:
    """The terminal itself: a loopback peer and no sign of a proxy in between."""
    return _loopback(peer(req)) and not proxied(req)


def client_address(req: Request) -> str:
    """The client's address: the peer's, or, behind a proxy on this machine, the one the proxy names (the
    last hop it added; earlier entries came from the client and prove nothing)."""
    addr = peer(req)
    if not (_loopback(addr) and proxied(req)):
        return addr
    named = [(req.headers.get("x-real-ip") or "").strip()]
    named.append((req.headers.get("x-forwarded-for") or "").split(",")[-1].strip())
    forwarded = (req.headers.get("forwarded") or "").split(",")[-1]
    named += [part.split("=", 1)[1].strip().strip('"') for part in forwarded.split(";")
              if part.strip().lower().startswith("for=")]
    for candidate in named:
        host = candidate.strip("[]")
        if host.count(":") == 1:  # 10.1.2.3:5123 (Forwarded may carry the port)
            host = host.split(":")[0]
        try:
            return str(ipaddress.ip_address(host))
        except ValueError:
            continue
    return f"proxied:{addr}"  # a proxy that names no valid address: all such clients share one back-off
