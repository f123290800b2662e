"""The coverage dashboard (`/ui/…`): per function map, the observation rate over time against
its target, per-tag bars, missing paths and unexpected symbols (pages in `dashboard`).

A browser cannot send a bearer header from a link, so `/ui/login` takes a read token once and
keeps it in an HttpOnly, SameSite=Strict cookie scoped to `/ui`; the cookie is accepted on the
dashboard's GET pages only, never by the API (a cross-site request cannot write anything).
"""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import parse_qs

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ..store import StoreError, open_store
from . import operations
from .dashboard import CONTENT_SECURITY_POLICY, render_index, render_login, render_map
from .deps import UI_COOKIE, StoreDown, authenticate_token, context
from .models import DATE_TIME, DIGEST_PATTERN
from .settings import DEFAULT_TREND_WINDOWS, MAX_TREND_WINDOWS

router = APIRouter(prefix="/ui", include_in_schema=False)

# Longest a login form body can be (a token is 50 characters).
_MAX_LOGIN_BYTES = 4096


def _html(page: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        page,
        status_code=status,
        headers={
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store",
        },
    )


def _signed_in(request: Request) -> HTMLResponse | None:
    """None when the caller may read, else the login page (401/403)."""
    header = request.headers.get("authorization", "")
    token = header[7:] if header.lower().startswith("bearer ") else request.cookies.get(UI_COOKIE)
    try:
        authenticate_token(request, token, "read")
    except HTTPException as exc:
        return _html(render_login(str(exc.detail) if token else ""), exc.status_code)
    return None


@router.get("/", response_class=HTMLResponse)
def index(request: Request) -> Response:
    refused = _signed_in(request)
    if refused is not None:
        return refused
    try:
        with open_store(context(request).settings.store_url) as store:
            maps = [m.summary() for m in store.list_function_maps()]
    except StoreError as exc:
        raise StoreDown(exc.describe()) from exc
    return _html(render_index(maps))


@router.get("/function-maps/{map_id}", response_class=HTMLResponse)
def function_map_page(
    request: Request,
    map_id: str,
    window_from: Annotated[str | None, Query(alias="from", json_schema_extra=DATE_TIME)] = None,
    window_to: Annotated[str | None, Query(alias="to", json_schema_extra=DATE_TIME)] = None,
    windows: Annotated[int, Query(ge=1, le=MAX_TREND_WINDOWS)] = DEFAULT_TREND_WINDOWS,
) -> Response:
    refused = _signed_in(request)
    if refused is not None:
        return refused
    if not re.match(DIGEST_PATTERN, map_id):
        raise operations.NotFound(f"no function map {map_id!r}: expected sha256:<hex>")
    try:
        with open_store(context(request).settings.store_url) as store:
            coverage = operations.coverage(store, map_id, window_from, window_to, windows)
    except StoreError as exc:
        raise StoreDown(exc.describe()) from exc
    return _html(render_map(coverage, windows))


@router.get("/login", response_class=HTMLResponse)
def login_form() -> Response:
    return _html(render_login())


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    body = await request.body()
    if len(body) > _MAX_LOGIN_BYTES:
        return _html(render_login("the form is too large"), 413)
    fields = parse_qs(body.decode("utf-8", "replace"))
    token = (fields.get("token") or [""])[0].strip()
    try:
        authenticate_token(request, token or None, "read")
    except HTTPException as exc:
        return _html(render_login(str(exc.detail)), exc.status_code)
    answer = RedirectResponse("/ui/", status_code=303)
    answer.set_cookie(
        UI_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/ui",
        max_age=8 * 3600,
    )
    return answer
