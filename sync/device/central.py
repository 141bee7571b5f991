"""The one HTTP client for the regency's central server, shared by push, time samples and roster pulls.

Three features talk to the same server with the same `[central]` settings. Keeping the HTTP part here means
one place decides: the session (keep-alive, the bearer token, the User-Agent), the (connect, read) timeout
on every request, how much of a reply may be read (streamed and cut off at a per-call limit, so a broken
proxy's 40 MB page cannot take the daemon's memory), and what a failure means:

- 401/403 → AuthError: a configuration problem (check `[central] token`, `presensi server add-device`);
- every request is signed with the device key (sync/wire/signed.py): the token alone never makes an upload
  count, the server checks the signature against the key bound at registration;
- 408/425/429/5xx, connection errors, timeouts, cut or garbled replies → TransientError, with the server's
  Retry-After (seconds or an HTTP date) for the retry;
- any other 4xx → RefusedError with the server's {"error"} text: this request will not succeed as it is.

The retry policy is one piece too (Backoff): full jitter, sleep = uniform(0, min(cap, base·2^n)), never
sooner than Retry-After (AWS Architecture Blog, "Exponential Backoff And Jitter"). The callers own their
loops, because each knows when to give up (a drain deadline, the next roster interval).
"""

from __future__ import annotations

import email.utils
import gzip
import json
import random
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass

import requests
import urllib3

from sync.wire import signed
from terminal import __version__, identity

CHUNK = 64 * 1024  # read granularity: a reply over its limit costs at most limit + one chunk of memory
JSON_LIMIT = 1024 * 1024  # every JSON answer of the central API is a few hundred bytes
ERROR_TEXT_LIMIT = 64 * 1024  # an error page is read this far for its message, the rest is dropped
RETRYABLE_STATUS = frozenset({408, 425, 429})


class CentralError(Exception):
    """A request to the central server failed; `status` and `reply` are set when the server answered."""

    def __init__(self, message: str, *, status: int | None = None, reply: Reply | None = None,
                 retry_after: float | None = None):
        super().__init__(message)
        self.status, self.reply, self.retry_after = status, reply, retry_after


class TransientError(CentralError):
    """This attempt failed but a later one may succeed (network, timeout, a busy or failing server)."""


class PermanentError(CentralError):
    """Retrying the same request will not help: someone has to change the configuration or the data."""


class AuthError(PermanentError):
    """401/403: the device token is wrong or the device is not (or no longer) registered."""


class RefusedError(PermanentError):
    """The server refused the request (a 4xx other than 401/403); the message carries its error text."""


class ConfigError(PermanentError):
    """`[central]` is not set up enough to talk to the server at all."""


class BodyTooLarge(TransientError):
    """The reply is longer than the caller's limit; it was not read further. `received` counts the bytes
    actually read, `declared` the Content-Length when the server sent one."""

    def __init__(self, message: str, *, limit: int, received: int, declared: int | None, status: int):
        super().__init__(message, status=status)
        self.limit, self.received, self.declared = limit, received, declared


@dataclass(frozen=True)
class Settings:
    url: str
    device_id: str
    token: str | None
    timeout: float = 10.0
    retry_base: float = 1.0
    max_backoff: float = 900.0
    key: object | None = None  # the device's Ed25519PrivateKey; None: requests go unsigned (the server refuses)
    enrolment_code: str | None = None

    @classmethod
    def from_config(cls, cfg) -> Settings:
        c = cfg.central
        if not c.url or not c.token:
            raise ConfigError("no central server configured: [central] url and token are not set; register "
                              "the device with `presensi server add-device` and put its token in [central] token")
        return cls(url=c.url.rstrip("/"), device_id=cfg.device.id, token=c.token, timeout=c.timeout,
                   retry_base=c.retry_base, max_backoff=c.max_backoff, key=device_key(cfg.state_dir),
                   enrolment_code=getattr(c, "enrolment_code", None))


def device_key(state_dir):
    """The device key every request is signed with; without it nothing can be delivered (fail closed)."""
    try:
        return identity.load_key(state_dir)
    except identity.KeyError_ as e:
        raise ConfigError(f"cannot sign requests to the central server: {e}") from None


@dataclass(frozen=True)
class Reply:
    """What the server answered, already read (within the call's limit); the connection is back in the pool."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    url: str

    def json(self):
        """The body as JSON; a garbled body (a proxy's HTML page with a 200) is a TransientError."""
        try:
            return json.loads(self.body)
        except ValueError:
            raise TransientError(f"garbled answer from {self.url} (not JSON)", status=self.status,
                                 reply=self) from None

    def error_text(self) -> str:
        """The server's {"error": "..."} text, else the start of the body, for messages."""
        try:
            return str(json.loads(self.body).get("error"))[:300]
        except (ValueError, AttributeError):
            return self.body[:200].decode("utf-8", "replace")


# -- the retry policy -------------------------------------------------------------------------------------


def backoff_delay(failures: int, base: float, cap: float, retry_after: float | None = None,
                  rng: random.Random | None = None) -> float:
    """Full jitter: uniform(0, min(cap, base·2^failures)); never sooner than the server's Retry-After."""
    ceiling = min(cap, base * (2 ** min(failures, 30)))
    delay = (rng or random).uniform(0, ceiling)
    return max(delay, retry_after or 0.0)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds from now: delay-seconds or an HTTP date (RFC 9110 §10.2.3); None if absent
    or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class Backoff:
    """The delays of one retry loop: call failed() after each failure, succeeded() after a success."""

    def __init__(self, base: float, cap: float, rng: random.Random | None = None):
        self.base, self.cap, self.rng = base, cap, rng
        self.failures = 0

    def failed(self, retry_after: float | None = None) -> float:
        self.failures += 1
        return backoff_delay(self.failures, self.base, self.cap, retry_after, self.rng)

    def succeeded(self) -> None:
        self.failures = 0


# -- the client -------------------------------------------------------------------------------------------


class Client:
    """One central server for one device: one keep-alive session, the token, timeouts and limits on every
    request. Not for concurrent use from several threads; give each thread its own Client."""

    def __init__(self, settings: Settings, session: requests.Session | None = None):
        self.s = settings
        self.session = session or requests.Session()
        self.session.headers["User-Agent"] = f"presensi-edge/{__version__}"
        if settings.token:
            self.session.headers["Authorization"] = f"Bearer {settings.token}"

    @classmethod
    def from_config(cls, cfg) -> Client:
        return cls(Settings.from_config(cfg))

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def backoff(self, rng: random.Random | None = None) -> Backoff:
        return Backoff(self.s.retry_base, self.s.max_backoff, rng)

    def device_path(self, rest: str) -> str:
        """/api/v1/devices/{device_id}{rest}: the device's own part of the API."""
        return f"/api/v1/devices/{urllib.parse.quote(self.s.device_id, safe='')}{rest}"

    def request(self, method: str, path: str, *, data: bytes | None = None, json_body=None,
                compress: bool = False, headers: dict | None = None, params: dict | None = None,
                limit: int = JSON_LIMIT) -> Reply:
        """Send one request and read at most `limit` bytes of the reply. Returns the Reply for 1xx–3xx;
        raises AuthError, RefusedError, TransientError (BodyTooLarge for a reply over the limit)."""
        headers = dict(headers or {})
        if json_body is not None:
            data = json.dumps(json_body, ensure_ascii=False, separators=(",", ":")).encode()
            headers.setdefault("Content-Type", "application/json")
        if compress and data is not None:
            data, headers["Content-Encoding"] = gzip.compress(data, compresslevel=3), "gzip"
        # the query is encoded here, not by requests, so the signed path is byte for byte the one sent
        target = path + ("?" + urllib.parse.urlencode(params) if params else "")
        if self.s.key is not None:
            headers.update(signed.sign_request(self.s.key, method, target, self.s.device_id, data,
                                               self.s.enrolment_code))
        url = self.s.url + target
        try:
            with self.session.request(method, url, data=data, headers=headers, stream=True,
                                      timeout=(self.s.timeout, self.s.timeout)) as resp:
                if resp.status_code >= 400:
                    reply = Reply(resp.status_code, resp.headers, _read_capped(resp, ERROR_TEXT_LIMIT), resp.url)
                    raise self._http_error(method, path, reply)
                return Reply(resp.status_code, resp.headers, self._read_body(resp, limit, method, path), resp.url)
        except requests.RequestException as e:
            raise self._network_error(e) from None

    def post_json(self, path: str, body, *, compress: bool = False, limit: int = JSON_LIMIT):
        """POST a JSON body, expect 200 with a JSON answer; returns the decoded answer."""
        reply = self.request("POST", path, json_body=body, compress=compress, limit=limit)
        if reply.status != 200:
            raise RefusedError(f"the central server answered {path} with HTTP {reply.status} instead of 200",
                               status=reply.status, reply=reply)
        return reply.json()

    # -- classification, in one place -----------------------------------------------------------------

    def _http_error(self, method: str, path: str, reply: Reply) -> CentralError:
        status, text = reply.status, reply.error_text()
        if status in (401, 403):
            return AuthError(f"the central server refused the device token (HTTP {status}: {text}); check "
                             f"[central] token, or register the device again with `presensi server add-device "
                             f"{self.s.device_id}` and put the new token in [central] token; a re-imaged "
                             f"terminal (new key) is bound with `presensi server rebind-device "
                             f"{self.s.device_id} --public-key …` (the key `presensi init` prints)",
                             status=status, reply=reply)
        if status in RETRYABLE_STATUS or status >= 500:
            return TransientError(f"HTTP {status} from {self.s.url}: {text}", status=status, reply=reply,
                                  retry_after=parse_retry_after(reply.headers.get("Retry-After")))
        return RefusedError(f"the central server refused {method} {path} (HTTP {status}: {text})",
                            status=status, reply=reply)

    def _network_error(self, e: requests.RequestException) -> TransientError:
        if _is_timeout(e):
            return TransientError(f"the central server at {self.s.url} did not answer within "
                                  f"{self.s.timeout:g} s ({type(e).__name__}); check the network and [central] url")
        if isinstance(e, (requests.exceptions.ContentDecodingError, requests.exceptions.ChunkedEncodingError)):
            return TransientError(f"garbled or cut answer from {self.s.url} ({type(e).__name__})")
        return TransientError(f"cannot reach the central server at {self.s.url} ({type(e).__name__}: "
                              f"{_reason(e)}); check the network and [central] url")

    def _read_body(self, resp: requests.Response, limit: int, method: str, path: str) -> bytes:
        declared = resp.headers.get("Content-Length")
        declared_n = int(declared) if declared and declared.isdigit() else None
        if declared_n is not None and declared_n > limit:
            raise BodyTooLarge(f"the central server's answer to {method} {path} is {declared_n} bytes, over the "
                               f"limit of {limit} bytes; not read", limit=limit, received=0, declared=declared_n,
                               status=resp.status_code)
        body = bytearray()
        for chunk in resp.iter_content(CHUNK):
            body += chunk
            if len(body) > limit:  # leaving the `with` closes the connection instead of draining the rest
                raise BodyTooLarge(f"the central server's answer to {method} {path} is over the limit of "
                                   f"{limit} bytes; cut off after {len(body)} bytes", limit=limit,
                                   received=len(body), declared=declared_n, status=resp.status_code)
        return bytes(body)


def _read_capped(resp: requests.Response, cap: int) -> bytes:
    """Up to `cap` bytes of an error reply: enough for its message, never the whole of a huge page."""
    body = bytearray()
    for chunk in resp.iter_content(CHUNK):
        body += chunk
        if len(body) >= cap:
            break
    return bytes(body[:cap])


def _is_timeout(e: BaseException) -> bool:
    """requests reports a read timeout in the middle of a body as a ConnectionError around urllib3's
    ReadTimeoutError; both are the server not answering in time."""
    if isinstance(e, requests.Timeout):
        return True
    return any(isinstance(a, urllib3.exceptions.TimeoutError) for a in e.args)


def _reason(e: BaseException) -> str:
    """The operating system's words for a connection failure ("Connection refused", "Name or service not
    known"), found inside requests' and urllib3's wrappers; else the exception's name."""
    seen: BaseException | None = e
    for _ in range(8):
        if seen is None:
            break
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror
        inner = getattr(seen, "reason", None)
        if not isinstance(inner, BaseException):
            inner = next((a for a in seen.args if isinstance(a, BaseException)), None)
        seen = inner or seen.__cause__ or seen.__context__
    return str(e)[:200] or type(e).__name__
