"""The station's door: what every request to `shouwang agent serve` passes before a handler runs.

An ASGI wrapper around the station's Litestar app (so it covers every path, unknown ones too):

1. **Host allow-list.** The ``Host`` header must name this machine (127.0.0.1, localhost, [::1])
   or a name configured for the site (``site.json`` ``allowed_hosts``, `agent init
   --allowed-host`, or ``SHOUWANG_AGENT_ALLOWED_HOSTS``, comma-separated). Anything else gets
   421 and a fixed text, nothing more: a web page whose domain resolves to 127.0.0.1 (DNS
   rebinding) reads nothing.
2. **Security headers** on every response (web.security.SECURITY_HEADERS: a CSP without inline
   scripts or styles, nosniff, same-origin referrers, no framing).
3. **Log-in.** Everything but ``/login`` and ``/static/`` needs a session (cookie from the log-in
   page) or an ``Authorization: Bearer`` token (`shouwang agent token issue`). Without one,
   pages redirect to ``/login`` and the JSON routes answer 401.
4. **Same origin.** Every unsafe method (POST, PUT, PATCH, DELETE) must carry an ``Origin`` (or
   a ``Referer``) naming this server's own host, else 403 and nothing changes. A token request
   with neither (a station app, not a browser) passes; a browser cannot attach the header to a
   cross-site request without a CORS preflight, which this server never grants.
5. **JSON only as JSON.** An unsafe request to a JSON route must be ``Content-Type:
   application/json`` (415 otherwise): a cross-site HTML form cannot send that type.
6. **CSRF.** An unsafe request under a session must carry the session's CSRF token
   (web.security.csrf_token of the session id): pages post it in the form field
   ``csrf_token`` (checked by the handler with `form_csrf_ok`), JSON callers in the header
   ``X-CSRF-Token`` (checked here).

The identity a request passed with is at ``identity_of(request)``; handlers write its name into
each event's ``actor`` and into the read log.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from collections.abc import Iterable
from typing import Any, cast
from urllib.parse import quote

import msgspec
from litestar import Request, Response
from litestar.datastructures import Headers
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from sync_agent.accounts import Accounts, Identity
from web.security import CSRF_FIELD, SAFE_METHODS, SECURITY_HEADERS, csrf_ok, csrf_token, origin_ok

LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
ALLOWED_HOSTS_ENV = "SHOUWANG_AGENT_ALLOWED_HOSTS"
CSRF_HEADER = "x-csrf-token"
PUBLIC_PREFIXES = ("/static/",)
LOGIN_PATH = "/login"
_IDENTITY = "shouwang.identity"
_CROSS_ZH = "请求来自别的网站，已拒绝（Origin/Referer 不符），未作任何改动"
_CROSS_EN = "cross-origin request refused; nothing was changed"


def host_name(host: str | None) -> str | None:
    """The host name of a ``Host`` header value (port and IPv6 brackets removed), lower case."""
    if not host:
        return None
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[1:end] if end > 0 else None
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit():
        return name or None
    return host if ":" not in host else None


def allowed_hosts(configured: Iterable[str] = ()) -> frozenset[str]:
    """This machine's names, the site's configured names and those of SHOUWANG_AGENT_ALLOWED_HOSTS."""
    env = [h for h in os.environ.get(ALLOWED_HOSTS_ENV, "").split(",") if h.strip()]
    return LOCAL_HOSTS | {h.strip().lower().strip("[]") for h in [*configured, *env]}


def is_json_route(path: str) -> bool:
    return path == "/events" or path == "/status" or path.startswith("/children/")


def identity_of(request: Request[Any, Any, Any]) -> Identity:
    """Who the request came from (the door let it in only with one)."""
    return cast(Identity, cast(dict[str, Any], request.scope)[_IDENTITY])


def session_csrf(secret: bytes, identity: Identity) -> str:
    """The CSRF token of a session ('' for a token caller, who has no forms)."""
    return csrf_token(secret, identity.session) if identity.session else ""


def form_csrf_ok(secret: bytes, identity: Identity, posted: str | None) -> bool:
    return bool(identity.session) and csrf_ok(secret, identity.session, posted)


def cookie_name(site_id: str, what: str = "session") -> str:
    """Cookies are per host, not per port: each station's own name, so two stations on one
    machine (or the center's dashboard) never overwrite each other's log-in."""
    return f"shouwang_{what}_" + "".join(c if c.isalnum() else "_" for c in site_id)


def set_cookie(response: Response[Any], name: str, value: str, *, max_age: int, secure: bool) -> None:
    """Set a cookie the station's way: HttpOnly, SameSite=Strict, Path=/, Secure over TLS."""
    response.set_cookie(key=name, value=value, max_age=max_age, path="/", httponly=True, samesite="strict",
                        secure=secure)


class Door:
    """The ASGI app `shouwang agent serve` runs: the checks above, then the station's app."""

    def __init__(self, app: ASGIApp, accounts: Accounts, *, site_id: str, hosts: frozenset[str],
                 secret: bytes, session_length: dt.timedelta) -> None:
        self.app = app
        self.accounts = accounts
        self.hosts = hosts
        self.secret = secret
        self.session_length = session_length
        self.session_cookie = cookie_name(site_id)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = cast(dict[str, Any], scope)
        if raw["type"] != "http":  # the lifespan (and no websockets are served)
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {bytes(k).lower() for k, _ in message.get("headers", [])}
                extra = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()
                         if k.lower().encode() not in present]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        headers = Headers.from_scope(scope)
        if host_name(headers.get("host")) not in self.hosts:
            await _answer(send_with_headers, 421, b"misdirected request: this station does not answer to that host "
                          b"name\n", "text/plain; charset=utf-8")
            return
        path, method = str(raw["path"]), str(raw["method"]).upper()
        public = path == LOGIN_PATH or path.startswith(PUBLIC_PREFIXES)
        unsafe = method not in SAFE_METHODS
        json_route = is_json_route(path)
        # A browser names the page a request comes from: another origin is refused before anything else.
        sourced = bool(headers.get("origin") or headers.get("referer"))
        same_origin = not unsafe or origin_ok(method, headers)
        if unsafe and sourced and not same_origin:
            await _refuse(send_with_headers, 403, _CROSS_ZH, _CROSS_EN, json_route)
            return
        if public:
            if not same_origin:  # a log-in post that names no page: not from this station's form
                await _refuse(send_with_headers, 403, _CROSS_ZH, _CROSS_EN, json_route)
                return
            await self.app(scope, receive, send_with_headers)
            return
        identity = await asyncio.to_thread(self._identify, headers)
        if identity is None:
            if json_route:
                await _answer(send_with_headers, 401, b'{"error": "log in first: a session or a Bearer token"}',
                              "application/json", [(b"www-authenticate", b'Bearer realm="shouwang-station"')])
            else:
                query = bytes(raw.get("query_string", b"")).decode("latin-1")
                target = path + ("?" + query if query else "")
                await _answer(send_with_headers, 303, b"", "text/plain",
                              [(b"location", f"{LOGIN_PATH}?next={quote(target, safe='')}".encode())])
            return
        if not same_origin and identity.via != "token":  # a session's unsafe request must name its page
            await _refuse(send_with_headers, 403, _CROSS_ZH, _CROSS_EN, json_route)
            return
        if unsafe and json_route:
            ctype = (headers.get("content-type") or "").split(";", 1)[0].strip().lower()
            if ctype != "application/json":
                await _answer(send_with_headers, 415, b'{"error": "send Content-Type: application/json"}',
                              "application/json")
                return
            if identity.via == "session" and not csrf_ok(self.secret, identity.session, headers.get(CSRF_HEADER)):
                await _refuse(send_with_headers, 403, "缺少或错误的 CSRF 令牌", "missing or wrong X-CSRF-Token",
                              json_route)
                return
        raw[_IDENTITY] = identity
        await self.app(scope, receive, send_with_headers)

    def _identify(self, headers: Headers) -> Identity | None:
        auth = headers.get("authorization") or ""
        if auth:
            scheme, _, token = auth.partition(" ")
            return self.accounts.token(token.strip()) if scheme.lower() == "bearer" else None
        sid = _cookie(headers.get("cookie") or "", self.session_cookie)
        return self.accounts.session(sid) if sid else None


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


async def _answer(send: Send, status: int, body: bytes, media: str,
                  headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", media.encode()), (b"content-length", str(len(body)).encode()),
                            (b"cache-control", b"no-store"), *(headers or [])]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _refuse(send: Send, status: int, zh: str, en: str, json_route: bool) -> None:
    if json_route:
        await _answer(send, status, msgspec.json.encode({"error": en}), "application/json")
    else:
        await _answer(send, status, f"{zh}\n{en}\n".encode(), "text/plain; charset=utf-8")


__all__ = ["CSRF_FIELD", "Door", "allowed_hosts", "cookie_name", "form_csrf_ok", "host_name",
           "identity_of", "is_json_route", "session_csrf", "set_cookie"]
