"""Logging in and out of the central server's pages, and the front door (`/`) that sends each role to its
home page. The login form carries a double-submit CSRF token (a cookie and a field that must match: there
is no session yet); a successful login always makes a new session and drops whatever cookie the browser
brought (session fixation); failures are throttled per address and per account (sync/server/accounts.py)
and audited."""

from __future__ import annotations

import math
import secrets
import threading
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from .. import accounts
from .base import (
    COOKIE,
    HOME,
    LOGIN_COOKIE,
    Posted,
    check_origin,
    client,
    cookie_header,
    current_session,
    form_fields,
    form_route,
    read_cookie,
    redirect,
    render,
    require_role,
)

PASSWORD_CHECKS = threading.BoundedSemaphore(4)  # each scrypt check takes 16 MiB: bound them


class LoginForm(BaseModel):
    model_config = ConfigDict(extra="ignore")
    csrf: str = Field(max_length=128)
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=accounts.MAX_PASSWORD)


class Empty(BaseModel):
    model_config = ConfigDict(extra="ignore")


def throttle(request: Request) -> accounts.Throttle:
    if not hasattr(request.app.state, "throttle"):
        request.app.state.throttle = accounts.Throttle()
    return request.app.state.throttle


def router() -> APIRouter:
    r = APIRouter(include_in_schema=False)
    r.add_api_route("/", front_door, methods=["GET"])
    r.add_api_route("/login", login_form, methods=["GET"])
    r.add_api_route("/login", login, methods=["POST"], openapi_extra=form_route(4096))
    r.add_api_route("/logout", logout, methods=["POST"], openapi_extra=form_route())
    return r


def front_door(request: Request) -> Response:
    sess = current_session(request)
    return redirect(HOME.get(sess.role, "/login") if sess else "/login")


def _form(request: Request, status: int = 200, message: str = "", headers: dict | None = None,
          username: str = "") -> Response:
    token = secrets.token_urlsafe(32)
    cookie = cookie_header(request, LOGIN_COOKIE, token, max_age=3600)
    return render(request, "login.html", status, {"Set-Cookie": cookie, **(headers or {})}, csrf=token,
                  message=message, username=username)


def login_form(request: Request) -> Response:
    """The form, also to someone logged in (to log in as another account: the login replaces the session)."""
    return _form(request)


async def login(request: Request) -> Response:
    check_origin(request)
    fields = await form_fields(request)
    if not accounts.tokens_equal(fields.get("csrf"), read_cookie(request, LOGIN_COOKIE)):
        raise HTTPException(403, "Token formulir (CSRF) hilang atau salah: buka halaman masuk lagi")
    try:
        form = LoginForm.model_validate(fields)
    except ValueError:
        return _form(request, 400, "Isi nama pengguna dan kata sandi.")
    store, address = request.app.store, client(request)
    keys = (f"address:{address}", f"user:{form.username}")
    wait = throttle(request).wait(*keys)
    if wait > 0:
        seconds = math.ceil(wait)
        return _form(request, 429, f"Terlalu banyak percobaan gagal. Coba lagi dalam {seconds} detik.",
                     {"Retry-After": str(seconds)}, form.username)
    acct = await run_in_threadpool(_verify, store, form.username, form.password)
    if acct is None:
        throttle(request).failed(*keys)
        await run_in_threadpool(accounts.audit, store, form.username[:64], "login-failed", None, {}, address)
        return _form(request, 401, "Nama pengguna atau kata sandi salah.", username=form.username)
    throttle(request).succeeded(keys[0])
    old = read_cookie(request, COOKIE)
    token = await run_in_threadpool(_start, store, acct["username"], address, old)
    response = redirect(HOME.get(acct["role"], "/fleet"))
    response.headers.append("Set-Cookie", cookie_header(request, COOKIE, token))
    response.headers.append("Set-Cookie", cookie_header(request, LOGIN_COOKIE, "", max_age=0))
    return response


def _verify(store, username: str, password: str) -> dict | None:
    with PASSWORD_CHECKS:
        return accounts.verify(store, username, password)


def _start(store, username: str, address: str, old_token: str | None) -> str:
    accounts.end_session(store, old_token)  # a cookie brought along is never adopted, whoever made it
    token = accounts.create_session(store, username, address)
    accounts.audit(store, username, "login", None, {}, address)
    return token


def logout(request: Request, sess: Annotated[accounts.Session, Depends(require_role("admin", "diskominfo",
                                                                                      "bkpsdm"))],
           _: Annotated[Empty, Depends(Posted(Empty))]) -> Response:
    accounts.end_session(request.app.store, read_cookie(request, COOKIE))
    accounts.audit(request.app.store, sess.username, "logout", None, {}, client(request))
    return redirect("/login", {"Set-Cookie": cookie_header(request, COOKIE, "", max_age=0)})
