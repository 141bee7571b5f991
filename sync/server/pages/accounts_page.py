"""The admin's page of accounts: who may log in with which role, and the audit of logins and actions.
Accounts are made and passwords changed with `presensi server user add|passwd` on the server itself."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from .. import accounts
from .base import render, require_role

Admin = Annotated[accounts.Session, Depends(require_role())]


def router() -> APIRouter:
    r = APIRouter(include_in_schema=False)
    r.add_api_route("/accounts", accounts_page, methods=["GET"])
    return r


def accounts_page(request: Request, sess: Admin) -> Response:
    store = request.app.store
    return render(request, "accounts.html", accounts=accounts.list_accounts(store), roles=accounts.ROLES,
                  audit=accounts.audit_log(store, 200))
